// The NWPathMonitor hook: the engine notices a dead socket by itself only after its ping
// timeout (15 s by default); when the OS says the network changed (Wi-Fi to cellular, a
// network lost or back), the app tells it at once (model.networkChanged() calls
// reconnectNow()). Cheap when the link was fine.
import Network

/// Calls `onChange` whenever the device's network path changes; not for the path the
/// monitor starts with. Keep it as long as the app runs (RoomExampleApp does).
@MainActor
final class NetworkChanges {
    private let monitor = NWPathMonitor()
    private let onChange: @MainActor () -> Void
    private var last: NWPath?

    init(onChange: @escaping @MainActor () -> Void) {
        self.onChange = onChange
        monitor.pathUpdateHandler = { [weak self] path in
            Task { @MainActor [weak self] in self?.seen(path) }
        }
        monitor.start(queue: DispatchQueue(label: "network-changes"))
    }

    private func seen(_ path: NWPath) {
        defer { last = path }
        if let last, last != path {
            onChange()
        }
    }
}
