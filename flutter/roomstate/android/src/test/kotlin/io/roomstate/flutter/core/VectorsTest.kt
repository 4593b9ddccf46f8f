package io.roomstate.flutter.core

import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlinx.serialization.json.Json
import org.junit.jupiter.api.Test

/** The shape matcher the other tests apply to every delivery: it must tell a wrong shape. */
class VectorsTest {
    private val participant = mapOf(
        "sid" to "PA_1", "identity" to "alice", "name" to "", "metadata" to "", "attributes" to mapOf("hand" to "up"), "isLocal" to true,
    )

    @Test
    fun `the matcher accepts the shapes of CHANNELS_md and refuses others`() {
        val vector = Vectors.type("Participant")!!
        assertNull(Vectors.mismatch(vector, participant))
        assertNull(Vectors.mismatch(vector, participant + ("attributes" to emptyMap<String, String>())))
        assertNotNull(Vectors.mismatch(vector, participant - "sid"), "a missing key")
        assertNotNull(Vectors.mismatch(vector, participant + ("extra" to 1)), "an extra key")
        assertNotNull(Vectors.mismatch(vector, participant + ("isLocal" to "true")), "a string for a boolean")
        assertNotNull(Vectors.mismatch(vector, participant + ("attributes" to mapOf("hand" to 1))), "a map's value")

        val entry = Vectors.type("Entry")!!
        val good = mapOf("key" to "k", "valueJson" to "1", "version" to 1L, "updatedBy" to "a", "updatedAtMs" to 2L)
        assertNull(Vectors.mismatch(entry, good))
        assertNull(Vectors.mismatch(entry, good + ("version" to 1)), "an Integer, as the codec may decode")
        assertNotNull(Vectors.mismatch(entry, good + ("version" to 1uL)), "a ULong does not cross the codec")
        assertNotNull(Vectors.mismatch(entry, good + ("version" to 1.0)), "a double for an integer")
        assertNotNull(Vectors.mismatch(entry, null))

        val list = Vectors.result("remoteParticipants")!!
        assertNull(Vectors.mismatch(list, listOf(participant, participant)))
        assertNull(Vectors.mismatch(list, emptyList<Any>()))
        assertNotNull(Vectors.mismatch(list, listOf(participant, participant - "name")), "every element")

        // Optional fields: reason only when disconnected, detail only for tokenRefused.
        val state = Vectors.result("connectionState")!!
        assertNull(Vectors.mismatch(state, mapOf("state" to "connected")))
        assertNull(Vectors.mismatch(state, mapOf("state" to "disconnected", "reason" to mapOf("reason" to "removed"))))
        assertNull(Vectors.mismatch(state, mapOf("state" to "disconnected", "reason" to mapOf("reason" to "tokenRefused", "detail" to "x"))))
        assertNotNull(Vectors.mismatch(state, mapOf("state" to "disconnected", "reason" to "removed")))
        assertNotNull(Vectors.mismatch(Vectors.type("DisconnectReason")!!, mapOf("detail" to "x")), "reason is required")

        assertNull(Vectors.mismatch(Vectors.error("CONFLICT.absent")!!, mapOf("code" to "CONFLICT", "message" to "m", "details" to mapOf("current" to null))))
        assertNotNull(Vectors.mismatch(Vectors.error("CONFLICT.absent")!!, mapOf("code" to "CONFLICT", "message" to "m", "details" to mapOf("current" to good))))
        assertNotNull(Vectors.mismatch(Vectors.error("NOT_CONNECTED")!!, mapOf("code" to "NOT_CONNECTED", "message" to null, "details" to null)))
    }

    @Test
    fun `every value the codec module produces has its vector's shape`() {
        val state = io.roomstate.ConnectionState.Disconnected(io.roomstate.DisconnectReason.TokenRefused("the access token has expired"))
        assertNull(Vectors.mismatch(Vectors.type("ConnectionState.disconnected")!!, state.toChannel()))
        assertNull(Vectors.mismatch(Vectors.type("ConnectionState.connected")!!, io.roomstate.ConnectionState.Connected.toChannel()))
        val participant = io.roomstate.Participant("PA_1", "bob", "", "", mapOf("hand" to "up"), false)
        assertNull(Vectors.mismatch(Vectors.type("Participant")!!, participant.toChannel()))
        // Values cross as the JSON text given, untouched.
        val entry = io.roomstate.StoreEntry("k", """{"a":[1,null,2.50]}""", 3u, "alice", 4u)
        assertNull(Vectors.mismatch(Vectors.type("Entry")!!, entry.toChannel()))
        assertNull(Vectors.mismatch(Json.parseToJsonElement("""{"a":"b"}"""), mapOf("a" to "b")))
    }
}
