package io.roomstate.example.app

import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.material3.Button
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp

/** The server's address and an access token (scripts/example-server.sh prints both). */
@Composable
fun ConnectScreen(
    connecting: Boolean,
    onConnect: (url: String, token: String) -> Unit,
    modifier: Modifier = Modifier,
) {
    // 10.0.2.2 is the computer running the emulator.
    var url by rememberSaveable { mutableStateOf("ws://10.0.2.2:7880") }
    var token by rememberSaveable { mutableStateOf("") }
    Column(modifier.padding(16.dp), verticalArrangement = Arrangement.spacedBy(12.dp)) {
        Text("Join a room", style = MaterialTheme.typography.headlineSmall)
        OutlinedTextField(
            value = url,
            onValueChange = { url = it },
            label = { Text("Server URL") },
            singleLine = true,
            modifier = Modifier.fillMaxWidth(),
        )
        OutlinedTextField(
            value = token,
            onValueChange = { token = it },
            label = { Text("Access token") },
            minLines = 2,
            maxLines = 4,
            modifier = Modifier.fillMaxWidth(),
        )
        Text(
            "A token from your backend, or from: roomstate token create --room example --identity alice --can-update-metadata",
            style = MaterialTheme.typography.bodySmall,
        )
        Button(
            onClick = { onConnect(url, token) },
            enabled = !connecting && url.isNotBlank() && token.isNotBlank(),
        ) {
            Text(if (connecting) "Connecting…" else "Connect")
        }
    }
}
