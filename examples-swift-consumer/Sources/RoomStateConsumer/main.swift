// Uses the RoomState package as the README shows: the lines between the README markers
// are the README's Swift code, character for character (scripts/test-swift.sh checks, and
// builds this package, so that code compiles). Run: RoomStateConsumer URL TOKEN.
import Foundation
import RoomState

// README:begin
struct Pinned: Codable, Sendable {
    let text: String
    let by: String
}

final class MyListener: DefaultRoomListener, @unchecked Sendable {
    override func onSessionStoreAvailable(store: SessionStore) throws { /* keep it */ }
}

func showPinned(url: String, token: String) async throws {
    let room = try await RoomConnection.connect(url: url, token: token, listener: MyListener())
    let store = room.sessionStore()
    let observer = try store.observeChanges(forKeys: ["pinned"]) { key, entry in
        print(key, String(describing: try? entry?.decode(Pinned.self)))  // on the room's listener thread
    }
    try await store.set(Pinned(text: "Welcome!", by: "alice"), forKey: "pinned")  // Codable
    for try await pinned in store.values(forKey: "pinned", as: Pinned.self) {  // current value, then changes
        print(pinned?.text ?? "nothing pinned")
        break  // or go on: the loop ends when the room ends
    }
    // A lock-free counter: compare-and-set by version (0: the key must not exist).
    while true {
        let current = try await store.get(key: "votes")
        let votes = current.flatMap { Int($0.valueJson) } ?? 0
        do {
            try await store.compareAndSet(votes + 1, forKey: "votes", expectedVersion: current?.version ?? 0)
            break
        } catch RoomError.Conflict {
            continue
        }
    }
    _ = try await room.localParticipant().setAttributes(attributes: ["hand": "up"])  // "" deletes
    store.removeObserver(observer)
    await room.disconnect()
}
// README:end

let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    print("usage: RoomStateConsumer URL TOKEN")
    exit(0)
}
try await showPinned(url: arguments[1], token: arguments[2])
print("done")
