import 'package:flutter/services.dart';

import 'types.dart';

/// Every error a roomstate call or stream can fail with. Match on the subclass:
///
/// ```dart
/// try {
///   await store.compareAndSet('spotlight', version, {'identity': me});
/// } on ConflictException catch (conflict) {
///   showSnackBar('${conflict.current?.updatedBy} took it first');
/// }
/// ```
sealed class RoomStateException implements Exception {
  const RoomStateException(this.message);

  final String message;

  /// The typed exception for a [PlatformException] with a code of CHANNELS.md; other
  /// platform errors are returned unchanged.
  static Object fromPlatform(PlatformException error) {
    final details = error.details is Map ? (error.details as Map<Object?, Object?>).cast<String, Object?>() : null;
    final message = error.message ?? error.code;
    return switch (error.code) {
      'NOT_CONNECTED' => NotConnectedException(message),
      'TIMEOUT' => RoomTimeoutException(message, sent: details?['sent'] == true),
      'CONNECTION_LOST' => ConnectionLostException(message),
      'LIMIT_EXCEEDED' => LimitExceededException(
          message,
          limit: details!['limit']! as String,
          max: details['max']! as int,
          actual: details['actual']! as int,
        ),
      'NOT_ALLOWED' => NotAllowedException(message),
      'CONFLICT' => ConflictException(message, current: StoreEntry.maybeFromChannel(details?['current'])),
      'INVALID_VALUE' => InvalidValueException(message),
      'INVALID_TOKEN' => InvalidTokenException(message, code: details?['code'] as String? ?? ''),
      'UNAVAILABLE' => UnavailableException(message),
      'OUTCOME_UNKNOWN' => OutcomeUnknownException(message),
      'CONNECT' => ConnectException(message),
      'INTERNAL' => InternalException(message),
      'ROOM_ENDED' => RoomEndedException(message, reason: DisconnectReason.fromChannel(details)),
      // A plugin bug, not a condition an app handles.
      'BAD_ARGUMENTS' => ArgumentError(message),
      _ => error,
    };
  }

  @override
  String toString() => '$runtimeType: $message';
}

/// The room is not connected (it ended, or was never joined).
class NotConnectedException extends RoomStateException {
  const NotConnectedException(super.message);
}

/// No answer within the request timeout. [sent]: the request reached the connection,
/// so it may have been applied.
class RoomTimeoutException extends RoomStateException {
  const RoomTimeoutException(super.message, {required this.sent});
  final bool sent;
}

/// The connection was lost before the answer; the change may or may not have been applied.
class ConnectionLostException extends RoomStateException {
  const ConnectionLostException(super.message);
}

class LimitExceededException extends RoomStateException {
  const LimitExceededException(super.message, {required this.limit, required this.max, required this.actual});

  /// Which limit: `valueBytes`, `keys`, `storeBytes`, `keyBytes`, `attributesBytes`,
  /// `metadataBytes`, `nameBytes` or `frameBytes`.
  final String limit;
  final int max;
  final int actual;
}

/// The token does not allow this (for example, no `canUpdateOwnMetadata`).
class NotAllowedException extends RoomStateException {
  const NotAllowedException(super.message);
}

/// `compareAndSet` lost: [current] is the key's entry now (`null`: it does not exist).
class ConflictException extends RoomStateException {
  const ConflictException(super.message, {required this.current});
  final StoreEntry? current;
}

/// A bad key, or a value that is not JSON.
class InvalidValueException extends RoomStateException {
  const InvalidValueException(super.message);
}

/// The server refused the token; [code] says why (`invalid_token`, `token_expired`, ...).
class InvalidTokenException extends RoomStateException {
  const InvalidTokenException(super.message, {required this.code});
  final String code;
}

/// The server cannot reach the room's shared state right now; nothing changed.
class UnavailableException extends RoomStateException {
  const UnavailableException(super.message);
}

/// The room's shared state stopped answering while storing the change: it may or may
/// not have been made (if it was, listeners hear of it). Read the key before repeating
/// a change that must not happen twice.
class OutcomeUnknownException extends RoomStateException {
  const OutcomeUnknownException(super.message);
}

/// The server could not be reached.
class ConnectException extends RoomStateException {
  const ConnectException(super.message);
}

class InternalException extends RoomStateException {
  const InternalException(super.message);
}

/// A stream's room ended for another reason than `disconnect()` (after which streams
/// just complete).
class RoomEndedException extends RoomStateException {
  const RoomEndedException(super.message, {required this.reason});
  final DisconnectReason reason;
}

/// Runs a platform call, turning its errors into the typed exceptions above.
Future<T> guarded<T>(Future<T> Function() call) async {
  try {
    return await call();
  } on PlatformException catch (error) {
    throw RoomStateException.fromPlatform(error);
  }
}
