//! Condition types and reasons written to status (constants, so dashboards can rely on them).

/// Master: the CA API answered with the operator's client certificate.
pub const CA_REACHABLE: &str = "CAReachable";
/// Master: the cloud API answered.
pub const CLOUD_REACHABLE: &str = "CloudReachable";
/// Master: the records bucket answered.
pub const RECORDS_REACHABLE: &str = "RecordsReachable";
/// Master: the records bucket and its objects are not publicly readable.
pub const RECORDS_PRIVATE: &str = "RecordsPrivate";
/// Both kinds: everything is as declared.
pub const READY: &str = "Ready";

/// Node: the current incarnation's instance is running.
pub const INSTANCE_RUNNING: &str = "InstanceRunning";
/// Node: the classification record is written and current.
pub const RECORD_WRITTEN: &str = "RecordWritten";
/// Node: the current incarnation's certificate is signed.
pub const CERTIFICATE_SIGNED: &str = "CertificateSigned";
/// Node: the ENC has classified the agent (it asked for its catalog).
pub const CLASSIFIED: &str = "Classified";
/// Node: another node (of any master sharing the CA) claims the certname.
pub const CERTNAME_CONFLICT: &str = "CertnameConflict";

/// Both kinds: the annotation `puppet-conductor.dev/paused: "true"` (on the object, or for
/// a node on its master) stops the operator's actions; also the reason of `Paused=True`
/// and of a paused node's `Ready=False`.
pub const PAUSED: &str = "Paused";
/// Reason of `Paused=False` once the annotation is gone: actions resumed.
pub const RESUMED: &str = "Resumed";
