// Decodes every example of test_vectors/channels.json, the format the platform sides'
// tests check they send (CHANNELS.md). Run with `flutter test`.
import 'dart:convert';
import 'dart:io';

import 'package:flutter/services.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:roomstate/roomstate.dart';

void main() {
  final vectors = jsonDecode(File('test_vectors/channels.json').readAsStringSync()) as Map<String, dynamic>;
  Map<String, dynamic> group(String name) => vectors[name] as Map<String, dynamic>;

  test('types decode', () {
    final types = group('types');
    final entry = StoreEntry.fromChannel(types['Entry']);
    expect(entry.key, 'pinned');
    expect(entry.value, {'text': 'Welcome!', 'by': 'alice'});
    expect(entry.version, 3);
    expect(Participant.fromChannel(types['Participant']).attributes, {'hand': 'raised'});
    expect(RoomConnectionState.fromChannel(types['ConnectionState.connected']), isA<Connected>());
    final disconnected = RoomConnectionState.fromChannel(types['ConnectionState.disconnected']) as Disconnected;
    expect(disconnected.reason.kind, DisconnectReasonKind.tokenRefused);
    expect(DisconnectReason.fromChannel(types['DisconnectReason']).kind, DisconnectReasonKind.removed);
  });

  test('results decode', () {
    final results = group('results');
    expect(StoreEntry.maybeFromChannel(results['get.present'])?.version, 3);
    expect(StoreEntry.maybeFromChannel(results['get.absent']), isNull);
    final connect = results['connect'] as Map<String, dynamic>;
    expect(connect['room'], isA<int>());
    expect(Participant.listFromChannel(connect['participants']).single.identity, 'bob');
    expect(Participant.fromChannel(results['setAttributes']).attributes['hand'], 'raised');
    expect(Participant.listFromChannel(results['remoteParticipants']), hasLength(1));
  });

  test('every error code becomes its typed exception', () {
    Object decode(String name) {
      final error = group('errors')[name] as Map<String, dynamic>;
      return RoomStateException.fromPlatform(
        PlatformException(code: error['code'] as String, message: error['message'] as String?, details: error['details']),
      );
    }

    expect(decode('NOT_CONNECTED'), isA<NotConnectedException>());
    expect((decode('TIMEOUT') as RoomTimeoutException).sent, isTrue);
    expect(decode('CONNECTION_LOST'), isA<ConnectionLostException>());
    final limit = decode('LIMIT_EXCEEDED') as LimitExceededException;
    expect([limit.limit, limit.max, limit.actual], ['valueBytes', 4096, 5000]);
    expect(decode('NOT_ALLOWED'), isA<NotAllowedException>());
    expect((decode('CONFLICT.present') as ConflictException).current?.updatedBy, 'bob');
    expect((decode('CONFLICT.absent') as ConflictException).current, isNull);
    expect(decode('INVALID_VALUE'), isA<InvalidValueException>());
    expect((decode('INVALID_TOKEN') as InvalidTokenException).code, 'invalid_token');
    expect(decode('UNAVAILABLE'), isA<UnavailableException>());
    expect(decode('OUTCOME_UNKNOWN'), isA<OutcomeUnknownException>());
    expect(decode('CONNECT'), isA<ConnectException>());
    expect(decode('INTERNAL'), isA<InternalException>());
    expect(decode('BAD_ARGUMENTS'), isA<ArgumentError>());
    expect((decode('ROOM_ENDED') as RoomEndedException).reason.kind, DisconnectReasonKind.removed);
  });

  test('room and key events decode', () {
    final events = group('roomEvents');
    for (final name in events.keys.where((name) => name != 'snapshot' && name != 'connectionState')) {
      expect(RoomEvent.fromChannel(events[name] as Map<String, Object?>), isNotNull, reason: name);
    }
    final changed = RoomEvent.fromChannel(events['attributesChanged'] as Map<String, Object?>) as AttributesChanged;
    expect(changed.changedKeys, ['hand']);
    final snapshot = events['snapshot'] as Map<String, dynamic>;
    expect(RoomConnectionState.fromChannel(snapshot['state']), isA<Connected>());
    expect(Participant.listFromChannel(snapshot['participants']).single.identity, 'bob');
    final keys = group('keyEvents');
    expect(StoreEntry.maybeFromChannel((keys['present'] as Map<String, dynamic>)['entry'])?.key, 'pinned');
    expect(StoreEntry.maybeFromChannel((keys['absent'] as Map<String, dynamic>)['entry']), isNull);
  });
}
