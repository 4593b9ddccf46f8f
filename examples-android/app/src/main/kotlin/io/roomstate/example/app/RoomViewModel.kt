package io.roomstate.example.app

import androidx.lifecycle.DefaultLifecycleObserver
import androidx.lifecycle.LifecycleOwner
import androidx.lifecycle.ProcessLifecycleOwner
import androidx.lifecycle.ViewModel
import androidx.lifecycle.viewModelScope
import io.roomstate.example.RoomModel

/** Keeps the room across configuration changes; all the logic is in [RoomModel]. */
class RoomViewModel : ViewModel() {
    val model = RoomModel(viewModelScope)

    // Back in the foreground, the socket may have died in the background: resume at once.
    private val foreground = object : DefaultLifecycleObserver {
        override fun onStart(owner: LifecycleOwner) = model.returnedToForeground()
    }

    init {
        ProcessLifecycleOwner.get().lifecycle.addObserver(foreground)
    }

    override fun onCleared() {
        ProcessLifecycleOwner.get().lifecycle.removeObserver(foreground)
        model.close() // viewModelScope is already cancelled: this leaves the room without it
    }
}
