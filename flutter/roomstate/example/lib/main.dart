// The roomstate example: a pinned message everyone sees, a spotlight claimed with
// compareAndSet (one winner), and raised hands as participant attributes.
// Start a server and get two tokens with scripts/example-server.sh (README).
import 'dart:async';

import 'package:flutter/material.dart';
import 'package:roomstate/roomstate.dart';

void main() => runApp(const MaterialApp(title: 'roomstate', home: ConnectPage()));

class ConnectPage extends StatefulWidget {
  const ConnectPage({super.key});

  @override
  State<ConnectPage> createState() => _ConnectPageState();
}

class _ConnectPageState extends State<ConnectPage> {
  final _url = TextEditingController(text: 'ws://10.0.2.2:7880');
  final _token = TextEditingController();
  String? _error;

  Future<void> _connect() async {
    try {
      final room = await RoomState.connect(_url.text.trim(), _token.text.trim());
      if (!mounted) return;
      await Navigator.of(context).push(MaterialPageRoute<void>(builder: (_) => RoomPage(room: room)));
      await room.disconnect();
    } on RoomStateException catch (error) {
      setState(() => _error = error.message);
    }
  }

  @override
  Widget build(BuildContext context) => Scaffold(
        appBar: AppBar(title: const Text('Join a room')),
        body: Padding(
          padding: const EdgeInsets.all(16),
          child: Column(children: [
            TextField(controller: _url, decoration: const InputDecoration(labelText: 'Server URL')),
            TextField(controller: _token, decoration: const InputDecoration(labelText: 'Token')),
            const SizedBox(height: 16),
            FilledButton(onPressed: _connect, child: const Text('Join')),
            if (_error != null) Text(_error!, style: const TextStyle(color: Colors.red)),
          ]),
        ),
      );
}

class RoomPage extends StatefulWidget {
  const RoomPage({super.key, required this.room});
  final Room room;

  @override
  State<RoomPage> createState() => _RoomPageState();
}

class _RoomPageState extends State<RoomPage> with WidgetsBindingObserver {
  final _message = TextEditingController();
  StoreEntry? _spotlight;
  StreamSubscription<StoreEntry?>? _spotlightWatch;
  String? _notice;
  // Made once: a StreamBuilder given a new stream on every build would listen anew.
  late final Stream<StoreEntry?> _pinned = _store.watch('pinned');
  late final Stream<RoomConnectionState> _states = widget.room.connectionStates;
  late final Stream<List<Participant>> _people = widget.room.participants;

  SessionStore get _store => widget.room.sessionStore;
  String get _me => widget.room.localParticipant.info.identity;

  @override
  void initState() {
    super.initState();
    WidgetsBinding.instance.addObserver(this);
    // Kept here (not only in a StreamBuilder) because compareAndSet needs its version.
    _spotlightWatch = _store.watch('spotlight').listen((entry) => setState(() => _spotlight = entry));
  }

  @override
  void didChangeAppLifecycleState(AppLifecycleState state) {
    // Back in the foreground: the socket may have died in the background.
    if (state == AppLifecycleState.resumed) widget.room.reconnectNow();
  }

  @override
  void dispose() {
    WidgetsBinding.instance.removeObserver(this);
    _spotlightWatch?.cancel();
    super.dispose();
  }

  Future<void> _guard(Future<void> Function() action) async {
    try {
      await action();
      setState(() => _notice = null);
    } on ConflictException catch (conflict) {
      final holder = (conflict.current?.value as Map<String, Object?>?)?['identity'];
      setState(() => _notice = holder == null ? 'the spotlight changed: try again' : '$holder took the spotlight first');
    } on RoomStateException catch (error) {
      setState(() => _notice = error.message);
    }
  }

  Future<void> _claimSpotlight() => _guard(
        () => _store.compareAndSet('spotlight', _spotlight?.version ?? 0, {'identity': _me}),
      );

  Future<void> _releaseSpotlight() => _guard(() => _store.compareAndSet('spotlight', _spotlight!.version, null));

  Future<void> _raiseHand(bool up) =>
      _guard(() => widget.room.localParticipant.setAttributes({'hand': up ? 'raised' : ''}));

  @override
  Widget build(BuildContext context) {
    final holder = (_spotlight?.value as Map<String, Object?>?)?['identity'] as String?;
    return Scaffold(
      appBar: AppBar(title: const Text('roomstate')),
      body: ListView(padding: const EdgeInsets.all(16), children: [
        StreamBuilder<RoomConnectionState>(
          stream: _states,
          builder: (context, state) => switch (state.data) {
            Connected() || null => const SizedBox.shrink(),
            final other => MaterialBanner(content: Text('$other'), actions: const [SizedBox.shrink()]),
          },
        ),
        StreamBuilder<StoreEntry?>(
          stream: _pinned,
          builder: (context, pinned) {
            final value = pinned.data?.value as Map<String, Object?>?;
            return ListTile(
              leading: const Icon(Icons.push_pin),
              title: Text(value == null ? 'Nothing pinned' : '${value['text']}'),
              subtitle: value == null ? null : Text('by ${value['by']}'),
              trailing: value == null
                  ? null
                  : IconButton(icon: const Icon(Icons.clear), onPressed: () => _guard(() => _store.delete('pinned'))),
            );
          },
        ),
        Row(children: [
          Expanded(child: TextField(controller: _message, decoration: const InputDecoration(labelText: 'Pin a message'))),
          IconButton(
            icon: const Icon(Icons.send),
            onPressed: () => _guard(() => _store.set('pinned', {'text': _message.text, 'by': _me})),
          ),
        ]),
        const Divider(),
        ListTile(
          leading: const Icon(Icons.highlight),
          title: Text(holder == null ? 'Nobody in the spotlight' : '$holder is in the spotlight'),
          trailing: holder == _me
              ? TextButton(onPressed: _releaseSpotlight, child: const Text('Release'))
              : FilledButton(onPressed: _claimSpotlight, child: const Text('Claim')),
        ),
        if (_notice != null) Text(_notice!, style: const TextStyle(color: Colors.orange)),
        const Divider(),
        StreamBuilder<List<Participant>>(
          stream: _people,
          builder: (context, people) => Column(children: [
            for (final person in people.data ?? const <Participant>[])
              ListTile(
                leading: Icon(person.attributes['hand'] == 'raised' ? Icons.back_hand : Icons.person),
                title: Text(person.name.isEmpty ? person.identity : person.name),
                trailing: person.isLocal
                    ? Switch(value: person.attributes['hand'] == 'raised', onChanged: _raiseHand)
                    : null,
              ),
          ]),
        ),
      ]),
    );
  }
}
