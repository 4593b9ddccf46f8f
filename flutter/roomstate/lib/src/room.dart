import 'dart:async';
import 'dart:convert';

import 'package:flutter/services.dart';

import 'errors.dart';
import 'types.dart';

const MethodChannel _methods = MethodChannel('io.roomstate/methods');

/// Asked once per Dart isolate: after a hot restart the platform side still holds the
/// rooms of the isolate that is gone, and lets go of them.
Future<void>? _initialized;

Future<Map<String, Object?>> _call(String method, Map<String, Object?> arguments) async {
  final result = await guarded(() => _methods.invokeMapMethod<String, Object?>(method, arguments));
  return result!;
}

/// Where an app starts.
abstract final class RoomState {
  /// Joins the room the token grants and returns once joined: the store and the
  /// participants are known by then. `url` is the server's address, like
  /// `ws://10.0.2.2:7880` (Android emulator) or `wss://rooms.example.com`.
  static Future<Room> connect(String url, String token, {ConnectOptions options = const ConnectOptions()}) async {
    await (_initialized ??= guarded(() => _methods.invokeMethod<void>('initialize')));
    final joined = await _call('connect', {'url': url, 'token': token, 'options': options.toChannel()});
    return Room._(joined);
  }
}

/// A connection to one room. Call [disconnect] when leaving it.
class Room {
  Room._(Map<String, Object?> joined)
      : id = joined['room']! as int,
        _local = Participant.fromChannel(joined['local']),
        _remotes = {
          for (final participant in Participant.listFromChannel(joined['participants'])) participant.sid: participant,
        } {
    // Listened to at once: the platform side sends a snapshot first, so nothing that
    // happened since `connect` answered is missed. It ends with the room.
    EventChannel('io.roomstate/room/$id').receiveBroadcastStream().listen(
          _onEvent,
          onError: (Object error) => _events.addError(error is PlatformException ? RoomStateException.fromPlatform(error) : error),
          onDone: _onDone,
        );
  }

  /// This room's id on the platform channels.
  final int id;

  late final SessionStore sessionStore = SessionStore._(this);
  late final LocalParticipant localParticipant = LocalParticipant._(this);

  RoomConnectionState _state = const Connected();
  Participant _local;
  final Map<String, Participant> _remotes;
  final StreamController<RoomConnectionState> _states = StreamController.broadcast();
  final StreamController<List<Participant>> _people = StreamController.broadcast();
  final StreamController<RoomEvent> _events = StreamController.broadcast();
  final StreamController<SessionStore> _storeAvailable = StreamController.broadcast();

  RoomConnectionState get connectionState => _state;

  /// The current state, then every change. Ends after `disconnected`.
  Stream<RoomConnectionState> get connectionStates => _startingWith(() => _state, _states.stream);

  /// Everyone but this participant, sorted by identity.
  List<Participant> get remoteParticipants => _remotes.values.toList()..sort((a, b) => a.identity.compareTo(b.identity));

  /// This participant, then everyone else, sorted: now, then after every change.
  Stream<List<Participant>> get participants => _startingWith(_everyone, _people.stream);

  /// Joins, departures and changes of people, in order.
  Stream<RoomEvent> get events => _events.stream;

  /// The store at once, then again after every fresh join (after being away longer
  /// than the server's grace period, or in a new session): re-read what you show.
  Stream<SessionStore> get onSessionStoreAvailable => _startingWith(() => sessionStore, _storeAvailable.stream);

  /// Leaves the room: the others are told at once, streams complete. Idempotent.
  Future<void> disconnect() => guarded(() => _methods.invokeMethod<void>('disconnect', {'room': id}));

  /// The access token for the next connection (a resume works with an expired token;
  /// joining anew does not). See docs/mobile.md.
  Future<void> updateToken(String token) =>
      guarded(() => _methods.invokeMethod<void>('updateToken', {'room': id, 'token': token}));

  /// Drops the connection and resumes at once: call it when the network changes or
  /// the app returns to the foreground.
  Future<void> reconnectNow() => guarded(() => _methods.invokeMethod<void>('reconnectNow', {'room': id}));

  List<Participant> _everyone() => [_local, ...remoteParticipants];

  void _onEvent(Object? message) {
    final event = (message! as Map<Object?, Object?>).cast<String, Object?>();
    switch (event['type']) {
      case 'snapshot':
        _local = Participant.fromChannel(event['local']);
        _remotes
          ..clear()
          ..addEntries(Participant.listFromChannel(event['participants']).map((p) => MapEntry(p.sid, p)));
        _setState(RoomConnectionState.fromChannel(event['state']));
        _people.add(_everyone());
      case 'connectionState':
        _setState(RoomConnectionState.fromChannel(event['state']));
      default:
        final roomEvent = RoomEvent.fromChannel(event);
        if (roomEvent == null) return; // A newer platform side's event: ignored.
        _apply(roomEvent);
        _events.add(roomEvent);
    }
  }

  void _apply(RoomEvent event) {
    switch (event) {
      case SessionStoreAvailable():
        _storeAvailable.add(sessionStore);
        return;
      case ParticipantLeft(:final participant):
        _remotes.remove(participant.sid);
      case ParticipantJoined(:final participant) ||
            AttributesChanged(:final participant) ||
            MetadataChanged(:final participant) ||
            NameChanged(:final participant):
        if (participant.isLocal || participant.sid == _local.sid) {
          _local = participant;
        } else {
          _remotes[participant.sid] = participant;
        }
      case RoomMetadataChanged():
        return;
    }
    _people.add(_everyone());
  }

  void _setState(RoomConnectionState state) {
    _state = state;
    _states.add(state);
  }

  void _onDone() {
    for (final controller in [_states, _people, _events, _storeAvailable]) {
      controller.close();
    }
  }
}

/// Called with a key's current entry first (`null`: absent), then with every change,
/// once each, in order.
typedef KeyChangeListener = void Function(String key, StoreEntry? entry);

/// Returned by [SessionStore.addKeyChangeListener]; pass it to
/// [SessionStore.removeKeyChangeListener].
class KeyChangeListenerHandle {
  KeyChangeListenerHandle._(this.id, this._subscription);

  /// The listener's id on the platform side (from a counter).
  final int id;
  final StreamSubscription<Object?> _subscription;
}

/// The room's shared key-value store. Values are anything `jsonEncode` accepts.
class SessionStore {
  SessionStore._(this._room);

  final Room _room;

  int get _id => _room.id;

  /// The key's entry, `null` when it does not exist.
  Future<StoreEntry?> get(String key) async => StoreEntry.maybeFromChannel(
        await guarded(() => _methods.invokeMethod<Object?>('get', {'room': _id, 'key': key})),
      );

  /// Writes [value] under [key] (last writer wins); returns the new version. `null`
  /// deletes the key.
  Future<int> set(String key, Object? value) async => (await guarded(
        () => _methods.invokeMethod<int>('set', {'room': _id, 'key': key, 'valueJson': jsonEncode(value)}),
      ))!;

  /// Deletes [key]; deleting a key that does not exist succeeds.
  Future<void> delete(String key) => guarded(() => _methods.invokeMethod<void>('delete', {'room': _id, 'key': key}));

  /// Writes only if [key] is still at [expectedVersion] (0: it must not exist), else
  /// throws [ConflictException] with the current entry. `null` deletes.
  Future<int> compareAndSet(String key, int expectedVersion, Object? value) async => (await guarded(
        () => _methods.invokeMethod<int>('compareAndSet', {
          'room': _id,
          'key': key,
          'expectedVersion': expectedVersion,
          'valueJson': value == null ? null : jsonEncode(value),
        }),
      ))!;

  /// Calls [listener] with each key's current entry, then with every change. `"*"`
  /// observes every key. Errors (the room ended for another reason than
  /// `disconnect()`) go to [onError].
  Future<KeyChangeListenerHandle> addKeyChangeListener(
    List<String> keys,
    KeyChangeListener listener, {
    void Function(RoomStateException error)? onError,
  }) async {
    final registered = await _call('addKeyChangeListener', {'room': _id, 'keys': keys});
    // The platform side registers the engine's listener when this listens, so the
    // first event is the current value: nothing can be sent before.
    final subscription = EventChannel(registered['channel']! as String).receiveBroadcastStream().listen(
      (message) {
        final event = (message! as Map<Object?, Object?>).cast<String, Object?>();
        listener(event['key']! as String, StoreEntry.maybeFromChannel(event['entry']));
      },
      onError: (Object error) {
        final typed = error is PlatformException ? RoomStateException.fromPlatform(error) : error;
        if (typed is RoomStateException) onError?.call(typed);
      },
    );
    return KeyChangeListenerHandle._(registered['listener']! as int, subscription);
  }

  /// After this, the listener is not called again. Removing twice is harmless.
  Future<void> removeKeyChangeListener(KeyChangeListenerHandle handle) => handle._subscription.cancel();

  /// The entries of [key]: the current one first (`null`: absent), then every change.
  /// Completes when the room is left; fails with [RoomEndedException] when it ends
  /// otherwise. Cancelling the subscription removes the listener.
  Stream<StoreEntry?> watch(String key) {
    late final StreamController<StoreEntry?> controller;
    StreamSubscription<Object?>? subscription;
    var cancelled = false;
    controller = StreamController<StoreEntry?>(
      onListen: () async {
        try {
          final registered = await _call('addKeyChangeListener', {'room': _id, 'keys': [key]});
          // Cancelled while registering: never listened to, so the platform side never
          // added the engine's listener (it drops the channel when the room ends).
          if (cancelled) return;
          subscription = EventChannel(registered['channel']! as String).receiveBroadcastStream().listen(
                (message) => controller
                    .add(StoreEntry.maybeFromChannel((message! as Map<Object?, Object?>)['entry'])),
                onError: (Object error, StackTrace stack) => controller
                    .addError(error is PlatformException ? RoomStateException.fromPlatform(error) : error, stack),
                onDone: controller.close,
              );
        } catch (error, stack) {
          controller.addError(error, stack);
          await controller.close();
        }
      },
      onCancel: () {
        cancelled = true;
        return subscription?.cancel();
      },
    );
    return controller.stream;
  }

  /// [watch], decoded: the value (a map, list, string, number, bool), `null` when absent.
  Stream<Object?> watchValue(String key) => watch(key).map((entry) => entry?.value);
}

/// This client's own participant.
class LocalParticipant {
  LocalParticipant._(this._room);

  final Room _room;

  /// As last heard: updated by this participant's own changes and the server's.
  Participant get info => _room._local;

  /// Merges [attributes]: only the keys given change; `""` deletes a key.
  Future<Participant> setAttributes(Map<String, String> attributes) =>
      _update('setAttributes', {'attributes': attributes});

  Future<Participant> setMetadata(String metadata) => _update('setMetadata', {'metadata': metadata});

  Future<Participant> setName(String name) => _update('setName', {'name': name});

  Future<Participant> _update(String method, Map<String, Object?> arguments) async =>
      Participant.fromChannel(await _call(method, {'room': _room.id, ...arguments}));
}

/// [changes] with [current]'s value first, for each listener.
Stream<T> _startingWith<T>(T Function() current, Stream<T> changes) {
  late final StreamController<T> controller;
  StreamSubscription<T>? subscription;
  controller = StreamController<T>(
    onListen: () {
      controller.add(current());
      subscription = changes.listen(controller.add, onError: controller.addError, onDone: controller.close);
    },
    onCancel: () => subscription?.cancel(),
  );
  return controller.stream;
}
