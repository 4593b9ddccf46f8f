// The example app's entry point: one RoomModel for the app, the connect screen or the room
// screen according to its state, and the two OS hooks the engine asks for
// (docs/mobile.md): a network path change (NWPathMonitor) and the app becoming active
// both call model.networkChanged(), which resumes the connection at once.
//
// These files are not part of Package.swift: they go into an iOS app target in Xcode
// (README.md says how). They were not built here: no Xcode or SwiftUI on the machine
// that tests this repository.
import RoomExampleModel
import SwiftUI

@main
struct RoomExampleApp: App {
    @State private var model: RoomModel
    @Environment(\.scenePhase) private var scenePhase
    private let network: NetworkChanges

    init() {
        let model = RoomModel()
        _model = State(initialValue: model)
        network = NetworkChanges { model.networkChanged() }
    }

    var body: some Scene {
        WindowGroup {
            RootView(model: model)
                .onChange(of: scenePhase) { _, phase in
                    // Back in the foreground: the socket may have died while the app was away.
                    if phase == .active { model.networkChanged() }
                }
        }
    }
}

/// The banner, then the room screen while in a room (also while reconnecting: the room
/// stays shown as last known), else the connect screen.
struct RootView: View {
    let model: RoomModel

    var body: some View {
        VStack(spacing: 0) {
            if let banner = model.state.banner {
                BannerView(text: banner, connection: model.state.connection)
            }
            if model.state.inRoom {
                RoomView(model: model)
            } else {
                ConnectView(model: model)
            }
        }
        .animation(.default, value: model.state.connection)
    }
}

/// Connecting, Reconnecting, or Disconnected with the reason.
struct BannerView: View {
    let text: String
    let connection: ConnectionStatus

    var body: some View {
        Text(text)
            .font(.footnote.weight(.semibold))
            .foregroundStyle(.white)
            .frame(maxWidth: .infinity)
            .padding(8)
            .background(color)
    }

    private var color: Color {
        switch connection {
        case .connecting, .reconnecting: .orange
        case .disconnected: .red
        case .idle, .connected: .gray
        }
    }
}
