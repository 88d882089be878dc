//! The one end-to-end test binary: every area adds its module here. All tests of this binary
//! share one Salt lab (`Lab::shared()`), started on first use and torn down when the binary exits;
//! tests that stop the master or a minion start their own with `Lab::start`.

mod api;
mod api_fuzz;
mod cron_differential;
mod daemon;
mod dispatch;
mod formula;
mod lab_smoke;
mod pillar;
mod reactor;
mod runner;
mod runs;
mod salt_client;
mod tls;
mod ui;
