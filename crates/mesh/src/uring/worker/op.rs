//! What a completion is for: its user data names the operation, the
//! connection's direction and the slot.

/// The slot of a completion that belongs to no connection (a listener's
/// cancel): no connection slot ever gets this high.
pub(super) const NO_CONN: usize = usize::MAX >> 16;

/// What a completion is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// The eventfd read: commands are waiting.
    Wake,
    Accept,
    /// The backoff after an accept error ended.
    AcceptRetry,
    /// A cancel request's own completion.
    Cancel,
    Connect,
    ConnectTimeout,
    Recv,
    Send,
    /// A bulk direction's source became readable.
    PollIn,
    /// A bulk direction's destination can take more bytes.
    PollOut,
}

impl Op {
    const ALL: [Op; 10] = [
        Op::Wake,
        Op::Accept,
        Op::AcceptRetry,
        Op::Cancel,
        Op::Connect,
        Op::ConnectTimeout,
        Op::Recv,
        Op::Send,
        Op::PollIn,
        Op::PollOut,
    ];
}

/// A direction of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    /// Client to backend.
    Up = 0,
    /// Backend to client.
    Down = 1,
}

impl Side {
    #[inline]
    pub(super) fn other(self) -> Self {
        match self {
            Side::Up => Side::Down,
            Side::Down => Side::Up,
        }
    }
}

#[inline]
pub(super) fn user_data(op: Op, side: Side, slot: usize) -> u64 {
    (slot as u64) << 16 | (side as u64) << 8 | op as u64
}

#[inline]
pub(super) fn decode(user_data: u64) -> (Op, Side, usize) {
    let op = Op::ALL[(user_data & 0xff) as usize];
    let side = if user_data >> 8 & 1 == 0 {
        Side::Up
    } else {
        Side::Down
    };
    (op, side, (user_data >> 16) as usize)
}
