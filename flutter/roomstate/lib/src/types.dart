import 'dart:convert';

/// Reads the maps of CHANNELS.md. Every decoder here takes exactly the shape of the
/// example of the same name in test_vectors/channels.json.
Map<String, Object?> _map(Object? message) => (message as Map<Object?, Object?>).cast<String, Object?>();

/// One key of the session store.
class StoreEntry {
  const StoreEntry({
    required this.key,
    required this.valueJson,
    required this.version,
    required this.updatedBy,
    required this.updatedAt,
  });

  factory StoreEntry.fromChannel(Object? message) {
    final map = _map(message);
    return StoreEntry(
      key: map['key']! as String,
      valueJson: map['valueJson']! as String,
      version: map['version']! as int,
      updatedBy: map['updatedBy']! as String,
      updatedAt: DateTime.fromMillisecondsSinceEpoch(map['updatedAtMs']! as int, isUtc: true),
    );
  }

  static StoreEntry? maybeFromChannel(Object? message) =>
      message == null ? null : StoreEntry.fromChannel(message);

  final String key;

  /// The value as JSON text, exactly as stored.
  final String valueJson;

  /// Rises with every write; pass it to `compareAndSet`.
  final int version;

  /// The identity of the participant (or server API caller) that wrote it.
  final String updatedBy;
  final DateTime updatedAt;

  /// The value, decoded: a map, list, string, number, bool or null.
  Object? get value => jsonDecode(valueJson);

  @override
  bool operator ==(Object other) =>
      other is StoreEntry &&
      other.key == key &&
      other.valueJson == valueJson &&
      other.version == version &&
      other.updatedBy == updatedBy &&
      other.updatedAt == updatedAt;

  @override
  int get hashCode => Object.hash(key, valueJson, version, updatedBy, updatedAt);

  @override
  String toString() => 'StoreEntry($key = $valueJson, v$version by $updatedBy)';
}

class Participant {
  const Participant({
    required this.sid,
    required this.identity,
    required this.name,
    required this.metadata,
    required this.attributes,
    required this.isLocal,
  });

  factory Participant.fromChannel(Object? message) {
    final map = _map(message);
    return Participant(
      sid: map['sid']! as String,
      identity: map['identity']! as String,
      name: map['name']! as String,
      metadata: map['metadata']! as String,
      attributes: (map['attributes']! as Map<Object?, Object?>).cast<String, String>(),
      isLocal: map['isLocal']! as bool,
    );
  }

  static List<Participant> listFromChannel(Object? message) =>
      (message! as List<Object?>).map(Participant.fromChannel).toList();

  final String sid;
  final String identity;
  final String name;
  final String metadata;
  final Map<String, String> attributes;
  final bool isLocal;

  @override
  String toString() => 'Participant($identity, $attributes)';
}

/// Why a room ended.
enum DisconnectReasonKind { clientRequested, duplicateIdentity, removed, tokenRefused, sessionEnded }

class DisconnectReason {
  const DisconnectReason(this.kind, [this.detail]);

  factory DisconnectReason.fromChannel(Object? message) {
    final map = _map(message);
    return DisconnectReason(
      DisconnectReasonKind.values.byName(map['reason']! as String),
      map['detail'] as String?,
    );
  }

  final DisconnectReasonKind kind;

  /// Why the token was refused, for [DisconnectReasonKind.tokenRefused].
  final String? detail;

  @override
  bool operator ==(Object other) => other is DisconnectReason && other.kind == kind && other.detail == detail;

  @override
  int get hashCode => Object.hash(kind, detail);

  @override
  String toString() => detail == null ? kind.name : '${kind.name}: $detail';
}

/// The connection's state. `disconnected` is final and carries the reason.
sealed class RoomConnectionState {
  const RoomConnectionState();

  factory RoomConnectionState.fromChannel(Object? message) {
    final map = _map(message);
    return switch (map['state']) {
      'connecting' => const Connecting(),
      'connected' => const Connected(),
      'reconnecting' => const Reconnecting(),
      'disconnected' => Disconnected(DisconnectReason.fromChannel(map['reason'])),
      final other => throw FormatException('unknown connection state $other'),
    };
  }
}

class Connecting extends RoomConnectionState {
  const Connecting();
  @override
  String toString() => 'connecting';
}

class Connected extends RoomConnectionState {
  const Connected();
  @override
  String toString() => 'connected';
}

class Reconnecting extends RoomConnectionState {
  const Reconnecting();
  @override
  String toString() => 'reconnecting';
}

class Disconnected extends RoomConnectionState {
  const Disconnected(this.reason);
  final DisconnectReason reason;
  @override
  String toString() => 'disconnected ($reason)';
}

/// Connection tuning; `null` keeps the engine's default (which suits a phone).
class ConnectOptions {
  const ConnectOptions({
    this.requestTimeout,
    this.connectTimeout,
    this.pingInterval,
    this.pingTimeout,
    this.reconnectBackoffMin,
    this.reconnectBackoffMax,
    this.fallbackUrls = const [],
  });

  final Duration? requestTimeout;
  final Duration? connectTimeout;
  final Duration? pingInterval;
  final Duration? pingTimeout;
  final Duration? reconnectBackoffMin;
  final Duration? reconnectBackoffMax;

  /// More nodes of the same cluster, tried in turn after a failed attempt.
  final List<String> fallbackUrls;

  Map<String, Object?> toChannel() => {
        if (requestTimeout != null) 'requestTimeoutMs': requestTimeout!.inMilliseconds,
        if (connectTimeout != null) 'connectTimeoutMs': connectTimeout!.inMilliseconds,
        if (pingInterval != null) 'pingIntervalMs': pingInterval!.inMilliseconds,
        if (pingTimeout != null) 'pingTimeoutMs': pingTimeout!.inMilliseconds,
        if (reconnectBackoffMin != null) 'reconnectBackoffMinMs': reconnectBackoffMin!.inMilliseconds,
        if (reconnectBackoffMax != null) 'reconnectBackoffMaxMs': reconnectBackoffMax!.inMilliseconds,
        if (fallbackUrls.isNotEmpty) 'fallbackUrls': fallbackUrls,
      };
}

/// Something that happened to the room's people, in order.
sealed class RoomEvent {
  const RoomEvent();

  /// `null` for events the room's own state handles (snapshot, connection state).
  static RoomEvent? fromChannel(Map<String, Object?> event) => switch (event['type']) {
        'sessionStoreAvailable' => const SessionStoreAvailable(),
        'participantJoined' => ParticipantJoined(Participant.fromChannel(event['participant'])),
        'participantLeft' => ParticipantLeft(Participant.fromChannel(event['participant'])),
        'attributesChanged' => AttributesChanged(
            Participant.fromChannel(event['participant']),
            (event['changedKeys']! as List<Object?>).cast<String>(),
          ),
        'metadataChanged' => MetadataChanged(
            Participant.fromChannel(event['participant']),
            event['old']! as String,
            event['new']! as String,
          ),
        'nameChanged' => NameChanged(
            Participant.fromChannel(event['participant']),
            event['old']! as String,
            event['new']! as String,
          ),
        'roomMetadataChanged' => RoomMetadataChanged(event['old']! as String, event['new']! as String),
        _ => null,
      };
}

/// A fresh join (the first, or after being away past the server's grace period): the
/// store holds what the room holds now.
class SessionStoreAvailable extends RoomEvent {
  const SessionStoreAvailable();
}

class ParticipantJoined extends RoomEvent {
  const ParticipantJoined(this.participant);
  final Participant participant;
}

class ParticipantLeft extends RoomEvent {
  const ParticipantLeft(this.participant);
  final Participant participant;
}

class AttributesChanged extends RoomEvent {
  const AttributesChanged(this.participant, this.changedKeys);
  final Participant participant;
  final List<String> changedKeys;
}

class MetadataChanged extends RoomEvent {
  const MetadataChanged(this.participant, this.oldMetadata, this.newMetadata);
  final Participant participant;
  final String oldMetadata;
  final String newMetadata;
}

class NameChanged extends RoomEvent {
  const NameChanged(this.participant, this.oldName, this.newName);
  final Participant participant;
  final String oldName;
  final String newName;
}

class RoomMetadataChanged extends RoomEvent {
  const RoomMetadataChanged(this.oldMetadata, this.newMetadata);
  final String oldMetadata;
  final String newMetadata;
}
