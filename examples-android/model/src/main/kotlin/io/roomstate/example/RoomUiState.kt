// What the screens show: one immutable value, replaced as a whole on every change.
// Plain Kotlin (no Android imports), so it is tested on the JVM.
package io.roomstate.example

import kotlinx.serialization.Serializable

/** The session store value under "pinned": `{"text": ..., "by": identity}`. */
@Serializable
data class Pinned(val text: String, val by: String = "")

/** The session store value under "spotlight": `{"identity": ...}`. */
@Serializable
data class Spotlight(val identity: String)

/** The connection, as the banner shows it. */
sealed interface Connection {
    /** Not in a room, and nothing to report: the connect screen. */
    data object Idle : Connection

    /** Joining the room (the connect screen, with a banner). */
    data object Connecting : Connection

    data object Connected : Connection

    /** The link dropped: the engine is resuming. The room's last known state stays shown. */
    data object Reconnecting : Connection

    /** The room ended or could not be joined; [reason] says why (the connect screen again). */
    data class Disconnected(val reason: String) : Connection
}

/** One participant of the list: remote ones and this one ([isLocal]). */
data class ParticipantUi(
    val identity: String,
    val name: String,
    val handRaised: Boolean,
    val isLocal: Boolean,
    /** The engine's id of this participant's current connection to the room. */
    val sid: String,
)

data class RoomUiState(
    val connection: Connection = Connection.Idle,
    /** This participant's identity, from the token; null when not in a room. */
    val localIdentity: String? = null,
    /** The pinned message; null: nothing pinned. */
    val pinned: Pinned? = null,
    /** Who has the spotlight; null: nobody. */
    val spotlightHolder: String? = null,
    /** The version of the "spotlight" entry this state shows; 0: absent. */
    val spotlightVersion: ULong = 0u,
    /** Everyone in the room, this participant included, sorted by identity. */
    val participants: List<ParticipantUi> = emptyList(),
    /** Something to tell the user once (a lost race, a failed call); null: nothing. */
    val notice: String? = null,
) {
    /** Whether the room screen is shown (also while reconnecting). */
    val inRoom: Boolean
        get() = connection == Connection.Connected || connection == Connection.Reconnecting

    /** The banner's text; null: no banner. */
    val banner: String?
        get() = when (val connection = connection) {
            Connection.Idle, Connection.Connected -> null
            Connection.Connecting -> "Connecting…"
            Connection.Reconnecting -> "Reconnecting…"
            is Connection.Disconnected -> "Disconnected: ${connection.reason}"
        }

    val hasSpotlight: Boolean
        get() = spotlightHolder != null && spotlightHolder == localIdentity

    val handRaised: Boolean
        get() = participants.any { it.isLocal && it.handRaised }
}
