// The room screen: the pinned message (anyone sets or clears it), the spotlight (one
// holder, claimed with compare-and-set), the participants with their raised hands, and
// leaving. Everything shown comes from model.state; every button calls a model action.
import RoomExampleModel
import SwiftUI

struct RoomView: View {
    let model: RoomModel
    @State private var draft = ""

    private var state: RoomUIState { model.state }

    var body: some View {
        NavigationStack {
            List {
                pinnedSection
                spotlightSection
                participantsSection
                Section {
                    Button("Leave the room", role: .destructive) {
                        Task { await model.disconnect() }
                    }
                }
            }
            .navigationTitle(title)
            // A lost spotlight race ("bob took the spotlight first"), a failed call...
            .alert("Notice", isPresented: noticeShown, presenting: state.notice) { _ in
                Button("OK", role: .cancel) {}
            } message: { notice in
                Text(notice)
            }
        }
    }

    private var pinnedSection: some View {
        Section("Pinned") {
            if let pinned = state.pinned {
                VStack(alignment: .leading, spacing: 4) {
                    Text(pinned.text).font(.headline)
                    if !pinned.by.isEmpty {
                        Text("pinned by \(pinned.by)").font(.caption).foregroundStyle(.secondary)
                    }
                }
                Button("Clear for everyone", role: .destructive) {
                    Task { await model.unpin() }
                }
            } else {
                Text("Nothing pinned").foregroundStyle(.secondary)
            }
            HStack {
                TextField("A message for everyone", text: $draft)
                    .onSubmit { pin() }
                Button("Pin") { pin() }
                    .disabled(draft.trimmingCharacters(in: .whitespaces).isEmpty)
            }
        }
    }

    private var spotlightSection: some View {
        Section("Spotlight") {
            if let holder = state.spotlightHolder {
                let text = state.hasSpotlight ? "You have the spotlight" : "\(holder) has the spotlight"
                Label(text, systemImage: "star.fill")
            } else {
                Text("Nobody has the spotlight").foregroundStyle(.secondary)
            }
            if state.hasSpotlight {
                Button("Release the spotlight") {
                    Task { await model.releaseSpotlight() }
                }
            } else {
                Button("Take the spotlight") {
                    Task { await model.claimSpotlight() }
                }
            }
        }
    }

    private var participantsSection: some View {
        Section("Participants") {
            ForEach(state.participants) { participant in
                HStack {
                    Text(participant.name)
                    if participant.isLocal {
                        Text("(you)").foregroundStyle(.secondary)
                    }
                    Spacer()
                    if participant.handRaised {
                        Image(systemName: "hand.raised.fill").foregroundStyle(.orange)
                    }
                }
            }
            Toggle("Raise my hand", isOn: Binding(
                get: { state.handRaised },
                set: { raised in Task { await model.raiseHand(raised) } }
            ))
        }
    }

    private var title: String {
        if let identity = state.localIdentity { "You are \(identity)" } else { "Room" }
    }

    private var noticeShown: Binding<Bool> {
        Binding(
            get: { state.notice != nil },
            set: { shown in if !shown { model.dismissNotice() } }
        )
    }

    private func pin() {
        let text = draft
        draft = ""
        Task { await model.pin(text) }
    }
}
