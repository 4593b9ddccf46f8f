package io.roomstate.example.app

import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.ListItem
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Switch
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import io.roomstate.example.RoomUiState

/** The room: the pinned message, the spotlight, your hand, and everyone in the room. */
@Composable
fun RoomScreen(
    state: RoomUiState,
    onPin: (String) -> Unit,
    onUnpin: () -> Unit,
    onClaimSpotlight: () -> Unit,
    onReleaseSpotlight: () -> Unit,
    onRaiseHand: (Boolean) -> Unit,
    onLeave: () -> Unit,
    modifier: Modifier = Modifier,
) {
    LazyColumn(
        modifier.padding(horizontal = 16.dp),
        verticalArrangement = Arrangement.spacedBy(12.dp),
    ) {
        item {
            Row(verticalAlignment = Alignment.CenterVertically) {
                Text("You are ${state.localIdentity}", Modifier.weight(1f), style = MaterialTheme.typography.titleMedium)
                TextButton(onClick = onLeave) { Text("Leave") }
            }
        }
        item { PinnedCard(state, onPin, onUnpin) }
        item { SpotlightCard(state, onClaimSpotlight, onReleaseSpotlight) }
        item {
            Row(verticalAlignment = Alignment.CenterVertically) {
                Text("Raise your hand", Modifier.weight(1f))
                Switch(checked = state.handRaised, onCheckedChange = onRaiseHand)
            }
        }
        item { Text("In the room (${state.participants.size})", style = MaterialTheme.typography.titleMedium) }
        items(state.participants, key = { it.identity }) { participant ->
            ListItem(
                headlineContent = { Text(if (participant.isLocal) "${participant.name} (you)" else participant.name) },
                supportingContent = { Text(participant.identity) },
                trailingContent = { if (participant.handRaised) Text("✋ hand raised") },
            )
        }
    }
}

@Composable
private fun PinnedCard(state: RoomUiState, onPin: (String) -> Unit, onUnpin: () -> Unit) {
    var draft by rememberSaveable { mutableStateOf("") }
    Card(Modifier.fillMaxWidth()) {
        Column(Modifier.padding(16.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
            Text("Pinned", style = MaterialTheme.typography.labelLarge)
            val pinned = state.pinned
            if (pinned == null) {
                Text("Nothing pinned")
            } else {
                Text(pinned.text, style = MaterialTheme.typography.bodyLarge)
                Text("by ${pinned.by}", style = MaterialTheme.typography.bodySmall)
            }
            Row(verticalAlignment = Alignment.CenterVertically, horizontalArrangement = Arrangement.spacedBy(8.dp)) {
                OutlinedTextField(
                    value = draft,
                    onValueChange = { draft = it },
                    label = { Text("Message") },
                    singleLine = true,
                    modifier = Modifier.weight(1f),
                )
                Button(onClick = { onPin(draft); draft = "" }, enabled = draft.isNotBlank()) { Text("Pin") }
            }
            if (pinned != null) {
                TextButton(onClick = onUnpin) { Text("Clear the pinned message") }
            }
        }
    }
}

@Composable
private fun SpotlightCard(state: RoomUiState, onClaim: () -> Unit, onRelease: () -> Unit) {
    Card(Modifier.fillMaxWidth()) {
        Column(Modifier.padding(16.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
            Text("Spotlight", style = MaterialTheme.typography.labelLarge)
            val holder = state.spotlightHolder
            when {
                state.hasSpotlight -> {
                    Text("You have the spotlight")
                    OutlinedButton(onClick = onRelease) { Text("Release it") }
                }
                holder != null -> {
                    Text("$holder has the spotlight")
                    Button(onClick = onClaim) { Text("Take it") }
                }
                else -> {
                    Text("Nobody has the spotlight")
                    Button(onClick = onClaim) { Text("Take the spotlight") }
                }
            }
        }
    }
}
