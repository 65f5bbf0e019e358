//! Label sets of the operator's metric families.

use prometheus_client::encoding::EncodeLabelSet;

/// `{kind}`: which controller reconciled.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabels {
    pub(super) kind: String,
}

/// `{kind,category}`: a failed reconcile and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReconcileErrorLabels {
    pub(super) kind: String,
    pub(super) category: String,
}

/// `{service,operation,outcome}`: one external call and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CallLabels {
    pub(super) service: String,
    pub(super) operation: String,
    pub(super) outcome: String,
}

/// `{service,operation}`: the duration histogram leaves out the outcome to keep
/// the bucket series few.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OperationLabels {
    pub(super) service: String,
    pub(super) operation: String,
}

/// `{master,phase}`: node counts of one master.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PhaseLabels {
    pub(super) master: String,
    pub(super) phase: String,
}

/// `{master}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct MasterLabels {
    pub(super) master: String,
}

/// `{master,kind}`: orphans of one kind under one master.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OrphanKindLabels {
    pub(super) master: String,
    pub(super) kind: String,
}

/// `{master,kind,action}`: an orphan found and what was done about it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OrphanLabels {
    pub(super) master: String,
    pub(super) kind: String,
    pub(super) action: String,
}
