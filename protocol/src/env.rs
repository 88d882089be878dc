//! The names of the `SP_*` environment variables through which Salt hands a run to an agent:
//! the original wrapper's contract, plus `SP_TOKEN` and `SP_CA_FILE`. The sidecar sets them,
//! the agent reads them; both use these names.

/// One variable of the agent's environment contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnvVar {
    WebsocketUrl,
    JobName,
    JobInstance,
    /// The original's older name for [`EnvVar::JobInstance`]; still accepted.
    JobInstanceLegacy,
    Command,
    MachineId,
    Cwd,
    User,
    Timeout,
    OutputIntervalMs,
    LogLevel,
    LogDir,
    AllowOverlap,
    Lockfile,
    /// Since version 1: the run's secret; also accepted as `token=` in the URL's query.
    Token,
    /// Since version 1: a PEM bundle of CAs to trust for `wss://`.
    CaFile,
    /// Since version 1: where the agent keeps its spool, locks and results.
    StateDir,
}

impl EnvVar {
    pub const ALL: [EnvVar; 17] = [
        EnvVar::WebsocketUrl,
        EnvVar::JobName,
        EnvVar::JobInstance,
        EnvVar::JobInstanceLegacy,
        EnvVar::Command,
        EnvVar::MachineId,
        EnvVar::Cwd,
        EnvVar::User,
        EnvVar::Timeout,
        EnvVar::OutputIntervalMs,
        EnvVar::LogLevel,
        EnvVar::LogDir,
        EnvVar::AllowOverlap,
        EnvVar::Lockfile,
        EnvVar::Token,
        EnvVar::CaFile,
        EnvVar::StateDir,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            EnvVar::WebsocketUrl => "SP_WEBSOCKET_URL",
            EnvVar::JobName => "SP_JOB_NAME",
            EnvVar::JobInstance => "SP_JOB_INSTANCE",
            EnvVar::JobInstanceLegacy => "SP_JOB_INSTANCE_NAME",
            EnvVar::Command => "SP_COMMAND",
            EnvVar::MachineId => "SP_MACHINE_ID",
            EnvVar::Cwd => "SP_CWD",
            EnvVar::User => "SP_USER",
            EnvVar::Timeout => "SP_TIMEOUT",
            EnvVar::OutputIntervalMs => "SP_OUTPUT_INTERVAL_MS",
            EnvVar::LogLevel => "SP_WRAPPER_LOGLEVEL",
            EnvVar::LogDir => "SP_WRAPPER_LOGDIR",
            EnvVar::AllowOverlap => "SP_ALLOW_OVERLAP",
            EnvVar::Lockfile => "SP_LOCKFILE",
            EnvVar::Token => "SP_TOKEN",
            EnvVar::CaFile => "SP_CA_FILE",
            EnvVar::StateDir => "SP_STATE_DIR",
        }
    }
}
