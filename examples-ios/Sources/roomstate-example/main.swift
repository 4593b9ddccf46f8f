// The example app in a terminal, on the same RoomModel as the SwiftUI screens (App/):
//
//   swift run roomstate-example ws://127.0.0.1:7880 <token>
//
// It prints the banner, the pinned message, the spotlight and the participants whenever
// they change, and reads commands from stdin (type `help`). Run it in two terminals with
// the two tokens scripts/example-server.sh prints, and watch each see the other.
import Foundation
import RoomExampleModel

let help = """
    commands: pin <text> | unpin | spotlight | release | hand up | hand down | reconnect | help | quit
    """

let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    say("usage: roomstate-example <server url> <token>   (scripts/example-server.sh prints both)")
    exit(2)
}

/// Writes a line to stdout at once (no buffering, also when stdout is a pipe).
func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

func render(_ state: RoomUIState) -> String {
    let banner = state.banner ?? (state.connection == .connected ? "Connected" : "Not in a room")
    guard state.inRoom else { return banner }
    let who = state.localIdentity.map { "[\($0)] " } ?? ""
    let pinned = state.pinned.map { "\"\($0.text)\"" + ($0.by.isEmpty ? "" : " (by \($0.by))") } ?? "nothing"
    let spotlight = state.spotlightHolder.map { $0 == state.localIdentity ? "\($0) (you)" : $0 } ?? "nobody"
    let people = state.participants.map { participant in
        participant.identity + (participant.isLocal ? " (you)" : "") + (participant.handRaised ? " ✋" : "")
    }
    return """
        \(who)\(banner)
          pinned:       \(pinned)
          spotlight:    \(spotlight)
          participants: \(people.joined(separator: ", "))
        """
}

let model = RoomModel()

// Print what changed, as a screen would redraw it; notices once.
let printer = Task {
    var printed: String?
    var wasInRoom = false
    for await state in model.stateChanges() {
        let text = render(state)
        if text != printed {
            say(text)
            printed = text
        }
        if let notice = state.notice {
            say("! \(notice)")
            model.dismissNotice()
        }
        if wasInRoom, case .disconnected = state.connection { exit(1) } // removed, session ended...
        wasInRoom = wasInRoom || state.inRoom
    }
}

// stdin, read on a thread of its own so the main actor stays free to show changes.
let echo = isatty(0) == 0 // scripted stdin: show each command in the transcript
let lines = AsyncStream<String> { continuation in
    Thread {
        while let line = readLine() {
            continuation.yield(line)
        }
        continuation.finish()
    }.start()
}

await model.connect(url: arguments[1], token: arguments[2])
guard model.state.inRoom else { exit(1) } // the state printed says why
say(help)

commands: for await line in lines {
    if echo { say("> \(line)") }
    let words = line.split(separator: " ", maxSplits: 1).map(String.init)
    switch (words.first ?? "", words.count > 1 ? words[1] : "") {
    case ("", _): continue
    case ("pin", let text): await model.pin(text)
    case ("unpin", _): await model.unpin()
    case ("spotlight", _): await model.claimSpotlight()
    case ("release", _): await model.releaseSpotlight()
    case ("hand", "up"): await model.raiseHand(true)
    case ("hand", "down"): await model.raiseHand(false)
    case ("reconnect", _): model.networkChanged()
    case ("quit", _), ("exit", _): break commands
    default: say(help)
    }
}
await model.disconnect()
say("left the room")
