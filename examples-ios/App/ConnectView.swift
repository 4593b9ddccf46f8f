// The connect screen: the server's address and an access token. scripts/example-server.sh
// prints both: ws://127.0.0.1:7880 for the simulator, the LAN address for a phone, and a
// token for alice and one for bob.
import RoomExampleModel
import SwiftUI

struct ConnectView: View {
    let model: RoomModel
    // Kept between launches for convenience while trying the example; a real app gets its
    // tokens from its own backend (`roomstate token create` shows what that backend signs).
    @AppStorage("serverURL") private var url = "ws://127.0.0.1:7880"
    @AppStorage("token") private var token = ""

    private var connecting: Bool { model.state.connection == .connecting }

    var body: some View {
        NavigationStack {
            Form {
                Section("Server") {
                    TextField("ws://127.0.0.1:7880", text: $url)
                        .keyboardType(.URL)
                        .textInputAutocapitalization(.never)
                        .autocorrectionDisabled()
                }
                Section {
                    TextField("eyJhbGciOi…", text: $token, axis: .vertical)
                        .lineLimit(3...6)
                        .font(.footnote.monospaced())
                        .textInputAutocapitalization(.never)
                        .autocorrectionDisabled()
                } header: {
                    Text("Token")
                } footer: {
                    Text("From `roomstate token create`; scripts/example-server.sh prints one for alice and one for bob.")
                }
                if let notice = model.state.notice {
                    Section {
                        Text(notice).foregroundStyle(.red)
                    }
                }
                Section {
                    Button(connecting ? "Joining…" : "Join the room") {
                        Task { await model.connect(url: url, token: token) }
                    }
                    .disabled(connecting || url.isEmpty || token.isEmpty)
                }
            }
            .navigationTitle("Room example")
        }
    }
}
