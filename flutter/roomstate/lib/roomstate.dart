/// Realtime room state: a session store shared by the whole room, and participants with
/// attributes, metadata and names. See the package README and CHANNELS.md.
library roomstate;

export 'src/errors.dart';
export 'src/room.dart';
export 'src/types.dart';
