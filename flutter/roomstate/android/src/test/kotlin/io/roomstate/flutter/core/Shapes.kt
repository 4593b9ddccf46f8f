package io.roomstate.flutter.core

import java.io.File
import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonArray
import kotlinx.serialization.json.JsonElement
import kotlinx.serialization.json.JsonNull
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.JsonPrimitive
import kotlinx.serialization.json.jsonObject

/**
 * test_vectors/channels.json, and the shape matcher its "about" describes: the same keys,
 * values of the same JSON types (null matches only null; integers are Int or Long, as
 * StandardMethodCodec decodes them), an example list's first element the shape of every
 * element. Optional fields of CHANNELS.md may be absent or present: `reason` of a
 * ConnectionState (an object, only when disconnected) and `detail` of a DisconnectReason.
 * `attributes` is a dictionary ({String: String}): its keys are data, so only its values
 * are compared with the example's.
 */
object Vectors {
    private val root: JsonObject = Json.parseToJsonElement(
        File(System.getProperty("channels.vectors") ?: kotlin.error("run through Maven: channels.vectors is not set")).readText(),
    ).jsonObject

    private fun section(name: String) = root.getValue(name).jsonObject

    private val disconnectReason: JsonElement = section("types").getValue("ConnectionState.disconnected").jsonObject.getValue("reason")

    fun result(name: String): JsonElement? = section("results")[name]
    fun error(name: String): JsonElement? = section("errors")[name]
    fun roomEvent(name: String): JsonElement? = section("roomEvents")[name]
    fun keyEvent(name: String): JsonElement? = section("keyEvents")[name]
    fun type(name: String): JsonElement? = section("types")[name]

    /** Null when `value` has the shape of `vector`, else where and how it differs. */
    fun mismatch(vector: JsonElement, value: Any?, path: String = "$"): String? = when (vector) {
        JsonNull -> if (value == null) null else "$path: expected null, got ${describe(value)}"
        is JsonPrimitive -> when {
            vector.isString -> if (value is String) null else "$path: expected a string, got ${describe(value)}"
            vector.content == "true" || vector.content == "false" ->
                if (value is Boolean) null else "$path: expected a boolean, got ${describe(value)}"
            vector.content.any { it == '.' || it == 'e' || it == 'E' } ->
                if (value is Double) null else "$path: expected a double, got ${describe(value)}"
            else -> if (value is Int || value is Long) null else "$path: expected an integer, got ${describe(value)}"
        }
        is JsonArray -> when {
            value !is List<*> -> "$path: expected a list, got ${describe(value)}"
            vector.isEmpty() -> null
            else -> value.withIndex().firstNotNullOfOrNull { (i, element) -> mismatch(vector[0], element, "$path[$i]") }
        }
        is JsonObject -> if (value !is Map<*, *>) {
            "$path: expected a map, got ${describe(value)}"
        } else {
            objectMismatch(vector, value, path)
        }
    }

    private fun objectMismatch(vector: JsonObject, value: Map<*, *>, path: String): String? {
        value.keys.firstOrNull { it !is String }?.let { return "$path: a key that is not a string: ${describe(it)}" }
        for ((key, expected) in vector) {
            if (key in DICTIONARIES && key in value) {
                dictionaryMismatch(expected, value[key], "$path.$key")?.let { return it }
                continue
            }
            if (key !in value) {
                val optional = key == "detail" || (key == "reason" && expected is JsonObject)
                if (!optional) return "$path: missing '$key'"
                continue
            }
            mismatch(expected, value[key], "$path.$key")?.let { return it }
        }
        for (key in value.keys) {
            if (key in vector) continue
            when (key) {
                "reason" -> mismatch(disconnectReason, value[key], "$path.reason")?.let { return it }
                "detail" -> mismatch(JsonPrimitive(""), value[key], "$path.detail")?.let { return it }
                else -> return "$path: unexpected key '$key'"
            }
        }
        return null
    }

    private val DICTIONARIES = setOf("attributes")

    private fun dictionaryMismatch(vector: JsonElement, value: Any?, path: String): String? {
        if (vector !is JsonObject) return mismatch(vector, value, path)
        if (value !is Map<*, *>) return "$path: expected a map, got ${describe(value)}"
        val element = vector.values.firstOrNull() ?: JsonPrimitive("")
        for ((key, entry) in value) {
            if (key !is String) return "$path: a key that is not a string: ${describe(key)}"
            mismatch(element, entry, "$path.$key")?.let { return it }
        }
        return null
    }

    private fun describe(value: Any?): String = if (value == null) "null" else "${value::class.simpleName} $value"
}
