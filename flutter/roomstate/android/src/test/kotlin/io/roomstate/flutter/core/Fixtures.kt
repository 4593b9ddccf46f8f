package io.roomstate.flutter.core

import io.roomstate.ConnectOptions
import io.roomstate.ConnectionState
import io.roomstate.DefaultRoomListener
import io.roomstate.Participant
import io.roomstate.Room
import io.roomstate.RoomState
import io.roomstate.awaitUntil
import java.util.concurrent.CopyOnWriteArrayList

const val ROOM = "flutter-room"

/** A real `roomstate serve` process (bindings/kotlin's fixture, from its test jar). */
typealias TestServer = io.roomstate.TestServer

/** An access token, as an app backend would mint it. */
fun token(identity: String, canUpdateMetadata: Boolean = true, secret: String = io.roomstate.API_SECRET): String =
    io.roomstate.token(identity, room = ROOM, canUpdateMetadata = canUpdateMetadata, secret = secret)

/** `connect`'s options as Dart sends them (ints that fit 32 bits arrive as Integers). */
fun fastOptions(requestTimeoutMs: Int = 10_000): Map<String, Any?> = mapOf(
    "requestTimeoutMs" to requestTimeoutMs,
    "reconnectBackoffMinMs" to 20,
    "reconnectBackoffMaxMs" to 200,
)

/** Another participant, joined through the Kotlin bindings directly (another device). */
class Peer private constructor(val room: Room, val heard: CopyOnWriteArrayList<String>) {
    companion object {
        suspend fun join(server: TestServer, identity: String): Peer {
            val heard = CopyOnWriteArrayList<String>()
            val listener = object : DefaultRoomListener() {
                override fun onParticipantJoined(participant: Participant) { heard += "joined:${participant.identity}" }
                override fun onParticipantLeft(participant: Participant) { heard += "left:${participant.identity}" }
                override fun onConnectionStateChanged(state: ConnectionState) { heard += "state:${state::class.simpleName}" }
            }
            val options = ConnectOptions(reconnectBackoffMinMs = 20u, reconnectBackoffMaxMs = 200u)
            return Peer(RoomState.connect(server.url, token(identity), listener, options), heard)
        }
    }

    suspend fun awaitHeard(event: String) = awaitUntil("$event in $heard") { event in heard }

    suspend fun leave() {
        room.disconnect()
        room.close()
    }
}
