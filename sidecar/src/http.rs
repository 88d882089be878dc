//! The HTTP API (JSON under `/api/v1`). It binds `api_ws_bind_addr:api_ws_port` (127.0.0.1:8888
//! unless configured otherwise: binding elsewhere is a conscious choice). Handlers talk to the
//! scheduler, the run engine and the store through their handles; DTOs live in `http::api`.

mod api;

use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::runs::RunsHandle;
use crate::scheduler::SchedulerHandle;
use crate::store::StoreHandle;

/// What the handlers reach.
#[derive(Clone)]
pub struct State {
    pub runs: RunsHandle,
    pub scheduler: SchedulerHandle,
    pub store: StoreHandle,
}

/// The whole router.
pub fn router(state: State) -> Router {
    api::routes().with_state(Arc::new(state))
}

/// Serves the API on `listener` until `cancel`.
pub async fn serve(listener: TcpListener, state: State, cancel: CancellationToken) {
    let app = router(state);
    if let Err(e) =
        axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await
    {
        warn!(error = %e, "The HTTP API stopped.");
    }
}
