package io.roomstate.example.app

import android.net.ConnectivityManager
import android.net.Network
import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.activity.enableEdgeToEdge
import androidx.activity.viewModels
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.Scaffold
import androidx.compose.material3.SnackbarHost
import androidx.compose.material3.SnackbarHostState
import androidx.compose.material3.Surface
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.remember
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import io.roomstate.example.Connection
import io.roomstate.example.RoomModel
import io.roomstate.example.RoomUiState

class MainActivity : ComponentActivity() {
    private val viewModel: RoomViewModel by viewModels()

    // A new network (Wi-Fi to cellular...): the old socket may be dead without anyone
    // knowing yet, so resume at once instead of after the ping timeout.
    private val networkCallback = object : ConnectivityManager.NetworkCallback() {
        private var first = true

        override fun onAvailable(network: Network) {
            // Called once at registration with the current network: only later ones are changes.
            if (!first) viewModel.model.networkChanged()
            first = false
        }

        override fun onLost(network: Network) {
            first = false
            viewModel.model.networkChanged()
        }
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        enableEdgeToEdge()
        getSystemService(ConnectivityManager::class.java).registerDefaultNetworkCallback(networkCallback)
        setContent {
            MaterialTheme {
                val state by viewModel.model.state.collectAsStateWithLifecycle()
                RoomApp(state, viewModel.model)
            }
        }
    }

    override fun onDestroy() {
        getSystemService(ConnectivityManager::class.java).unregisterNetworkCallback(networkCallback)
        super.onDestroy()
    }
}

@Composable
fun RoomApp(state: RoomUiState, model: RoomModel) {
    val snackbar = remember { SnackbarHostState() }
    LaunchedEffect(state.notice) {
        val notice = state.notice ?: return@LaunchedEffect
        snackbar.showSnackbar(notice)
        model.dismissNotice(notice)
    }
    Scaffold(snackbarHost = { SnackbarHost(snackbar) }) { padding ->
        Column(Modifier.padding(padding).fillMaxSize()) {
            ConnectionBanner(state)
            if (state.inRoom) {
                RoomScreen(
                    state = state,
                    onPin = { model.pin(it) },
                    onUnpin = { model.unpin() },
                    onClaimSpotlight = { model.claimSpotlight() },
                    onReleaseSpotlight = { model.releaseSpotlight() },
                    onRaiseHand = { model.raiseHand(it) },
                    onLeave = { model.disconnect() },
                )
            } else {
                ConnectScreen(
                    connecting = state.connection == Connection.Connecting,
                    onConnect = { url, token -> model.connect(url, token) },
                )
            }
        }
    }
}

/** Connecting, reconnecting, or disconnected with the reason; nothing when connected. */
@Composable
fun ConnectionBanner(state: RoomUiState) {
    val text = state.banner ?: return
    val colors = MaterialTheme.colorScheme
    Surface(
        color = if (state.connection is Connection.Disconnected) colors.errorContainer else colors.secondaryContainer,
        modifier = Modifier.fillMaxWidth(),
    ) {
        Text(text, Modifier.padding(horizontal = 16.dp, vertical = 8.dp))
    }
}
