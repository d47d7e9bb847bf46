//! How the reporter sends what it holds: in pieces the control plane takes (at most
//! [`MAX_BATCH_ITEMS`] items and about `max_bytes` each), and, when the control plane
//! refuses a piece as malformed, in halves until the refused items are isolated — one
//! bad record costs itself, never the good ones sent with it.

use std::collections::VecDeque;
use std::future::Future;

use ez_contract::report::{MAX_BATCH_ITEMS, ReportError};

/// What became of a delivery.
#[derive(Debug)]
pub struct Delivery<T> {
    /// Items the control plane refused one by one (dropped: sending them again cannot
    /// help).
    pub refused: usize,
    /// When the control plane became unavailable: the error, and every item not yet
    /// delivered, in their order (to keep for the next round).
    pub unavailable: Option<(ReportError, Vec<T>)>,
}

/// Cuts `items` into pieces of at most `max_items` and (unless one item alone is
/// larger) `max_bytes` by `size`.
pub fn pieces<T>(
    items: Vec<T>,
    max_items: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> VecDeque<Vec<T>> {
    let max_items = max_items.clamp(1, MAX_BATCH_ITEMS);
    let mut out = VecDeque::new();
    let mut piece = Vec::new();
    let mut bytes = 0;
    for item in items {
        let n = size(&item);
        if !piece.is_empty() && (piece.len() >= max_items || bytes + n > max_bytes) {
            out.push_back(std::mem::take(&mut piece));
            bytes = 0;
        }
        bytes += n;
        piece.push(item);
    }
    if !piece.is_empty() {
        out.push_back(piece);
    }
    out
}

/// Sends each piece with `send`, which hands the items back when it fails. A refused
/// piece is split in two and each half sent again; a refused single item is dropped and
/// counted. The first "unavailable" stops the delivery.
pub async fn deliver<T, F, Fut>(mut queue: VecDeque<Vec<T>>, mut send: F) -> Delivery<T>
where
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = Result<(), (ReportError, Vec<T>)>>,
{
    let mut refused = 0;
    while let Some(piece) = queue.pop_front() {
        match send(piece).await {
            Ok(()) => {}
            Err((ReportError::Rejected(reason), mut piece)) => {
                if piece.len() <= 1 {
                    refused += piece.len();
                    tracing::warn!(%reason, "the control plane refused a report item; dropped");
                } else {
                    let second = piece.split_off(piece.len() / 2);
                    queue.push_front(second);
                    queue.push_front(piece);
                }
            }
            Err((e @ ReportError::Unavailable(_), piece)) => {
                let rest = piece.into_iter().chain(queue.into_iter().flatten()).collect();
                return Delivery {
                    refused,
                    unavailable: Some((e, rest)),
                };
            }
        }
    }
    Delivery {
        refused,
        unavailable: None,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn pieces_respect_both_bounds() {
        let sizes: Vec<usize> = (0..10).map(|_| 100).collect();
        let p = pieces(sizes.clone(), 4, 1_000, |n| *n);
        assert_eq!(p.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        let p = pieces(sizes, 100, 250, |n| *n);
        assert_eq!(p.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2, 2, 2]);
        // An item larger than the byte bound travels alone.
        let p = pieces(vec![10, 5_000, 10], 100, 100, |n| *n);
        assert_eq!(p.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
        let many: Vec<u8> = vec![0; MAX_BATCH_ITEMS + 1];
        assert_eq!(pieces(many, usize::MAX, usize::MAX, |_| 1).len(), 2);
    }

    /// A receiver that refuses any piece holding a negative number, and is away once
    /// `away_after` pieces were taken.
    async fn run(items: Vec<i32>, away_after: usize) -> (Delivery<i32>, Vec<i32>, usize) {
        let stored = RefCell::new(Vec::new());
        let calls = RefCell::new(0);
        let delivery = deliver(pieces(items, 8, usize::MAX, |_| 1), |piece: Vec<i32>| {
            let stored = &stored;
            let calls = &calls;
            async move {
                *calls.borrow_mut() += 1;
                if stored.borrow().len() >= away_after {
                    return Err((ReportError::Unavailable("down".into()), piece));
                }
                if piece.iter().any(|n| *n < 0) {
                    return Err((ReportError::Rejected("bad".into()), piece));
                }
                stored.borrow_mut().extend(piece);
                Ok(())
            }
        })
        .await;
        (delivery, stored.into_inner(), calls.into_inner())
    }

    #[tokio::test]
    async fn a_refused_item_is_isolated_and_the_rest_delivered() {
        let mut items: Vec<i32> = (1..=20).collect();
        items[13] = -1;
        let (delivery, stored, calls) = run(items, usize::MAX).await;
        assert_eq!(delivery.refused, 1);
        assert!(delivery.unavailable.is_none());
        assert_eq!(stored.len(), 19);
        assert!(!stored.contains(&-1));
        // Three pieces of 8, 8, 4; the refused one costs log2(8) more round trips each way.
        assert!(calls <= 3 + 6, "{calls}");
    }

    #[tokio::test]
    async fn an_outage_hands_back_everything_not_delivered_in_order() {
        let items: Vec<i32> = (1..=20).collect();
        let (delivery, stored, _) = run(items, 8).await;
        assert_eq!(stored, (1..=8).collect::<Vec<_>>());
        let (_, rest) = delivery.unavailable.expect("the receiver went away");
        assert_eq!(rest, (9..=20).collect::<Vec<_>>());
    }
}
