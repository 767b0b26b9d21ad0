//! The simulator's HTTP server. Each connection is served on its own so that
//! a fault can cut it the way a network does: a reset before any byte of the
//! answer, or a close right after the answer's head. A handler cannot do that
//! through axum, whose server always writes the answer it gets.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Put in an answer's extensions: the connection is cut instead of the
/// answer being written whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Reset (RST) with no byte of the answer written.
    Reset,
    /// The status line and headers are written, then the connection closes
    /// before any of the body its `Content-Length` promises.
    AfterHead,
}

impl Cut {
    /// `answer`, marked to be cut.
    pub fn apply(self, mut answer: Response) -> Response {
        answer.extensions_mut().insert(self);
        answer
    }
}

impl IntoResponse for Cut {
    fn into_response(self) -> Response {
        self.apply(Body::empty().into_response())
    }
}

/// Serves `app` on `listener` until `stop`, then waits for the open
/// connections to finish their answers.
pub(crate) async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, app.clone(), stop.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, usually: wait rather than spin.
                    tracing::warn!(error = %e, "the postal simulator could not accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection, cutting it when an answer asks for it.
async fn connection(stream: TcpStream, app: Router, stop: CancellationToken) {
    // A second handle on the socket, to make its close a reset: hyper owns
    // the stream.
    let spare = match socket2::SockRef::from(&stream).try_clone() {
        Ok(spare) => spare,
        Err(e) => {
            tracing::warn!(error = %e, "the postal simulator could not serve a connection");
            return;
        }
    };
    let (cuts, mut cut) = unbounded_channel();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let (app, cuts) = (app.clone(), cuts.clone());
        async move {
            let answer = app.oneshot(request.map(Body::new)).await?;
            Ok::<_, Infallible>(match answer.extensions().get::<Cut>().copied() {
                None => answer,
                Some(Cut::Reset) => {
                    let _ = cuts.send(Cut::Reset);
                    // Never written: the connection is dropped first.
                    return std::future::pending().await;
                }
                Some(Cut::AfterHead) => {
                    let promised = answer.body().size_hint().exact().unwrap_or(0).max(1);
                    let (head, _) = answer.into_parts();
                    let body = HeadOnly {
                        promised,
                        cuts: Some(cuts),
                    };
                    Response::from_parts(head, Body::new(body))
                }
            })
        }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    let mut stopping = false;
    loop {
        tokio::select! {
            done = served.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "a postal simulator connection ended");
                }
                return;
            }
            Some(how) = cut.recv() => {
                if how == Cut::Reset {
                    // A zero linger turns the close into a reset.
                    let _ = spare.set_linger(Some(Duration::ZERO));
                }
                // Returning drops the connection and both handles: closed.
                return;
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A body that promises `promised` bytes and yields none: when hyper first
/// asks for it, the head is already buffered and is flushed in the same poll
/// of the connection, before the connection task sees the cut.
struct HeadOnly {
    promised: u64,
    cuts: Option<UnboundedSender<Cut>>,
}

impl HttpBody for HeadOnly {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Some(cuts) = self.cuts.take() {
            let _ = cuts.send(Cut::AfterHead);
        }
        Poll::Pending
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.promised)
    }
}
