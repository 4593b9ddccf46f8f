//! The floor: the least a WebSocket fan-out can do. A client's first frame says
//! `writer` or `observer`; every later frame from a writer goes, as the same bytes, to
//! every observer, through the same bounded per-connection queues roomstate uses.
//! No state, no parsing, no auth.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub async fn serve() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("floor listening on ws://{}", listener.local_addr().unwrap());
    let observers: Arc<Mutex<Vec<mpsc::Sender<Message>>>> = Arc::default();
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let observers = observers.clone();
        tokio::spawn(async move {
            // The same buffer sizes roomstate uses.
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(1024)
                .write_buffer_size(4096);
            let Ok(socket) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            let (mut sink, mut stream) = socket.split();
            let Some(Ok(role)) = stream.next().await else {
                return;
            };
            if role.to_text().unwrap_or_default() == "observer" {
                let (queue, mut frames) = mpsc::channel::<Message>(65536);
                observers.lock().push(queue);
                tokio::spawn(async move {
                    while let Some(frame) = frames.recv().await {
                        if sink.feed(frame).await.is_err() {
                            return;
                        }
                        while let Ok(frame) = frames.try_recv() {
                            if sink.feed(frame).await.is_err() {
                                return;
                            }
                        }
                        if sink.flush().await.is_err() {
                            return;
                        }
                    }
                });
                while let Some(Ok(_)) = stream.next().await {}
            } else {
                while let Some(Ok(frame)) = stream.next().await {
                    if frame.is_text() {
                        for observer in observers.lock().iter() {
                            let _ = observer.try_send(frame.clone());
                        }
                    }
                }
            }
        });
    }
}
