//! Rooms: their number and size, joins, leaves and resumes.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

use super::families::{counter, counter_vec, gauge, histogram, touch};
use crate::protocol::{LeaveReason, Protocol};

pub struct RoomMetrics {
    pub active_rooms: IntGauge,
    pub room_peers: Histogram,
    pub room_full_rejections: IntCounter,
    joins: Vec<IntCounter>,
    leaves: IntCounterVec,
    pub reconnection_attempts: IntCounter,
    pub reconnections: IntCounterVec,
}

impl RoomMetrics {
    /// `max_room_size` sets the room-size buckets.
    pub fn register(r: &Registry, max_room_size: u32) -> Self {
        let leaves = counter_vec(
            r,
            "chatsubo_leaves_total",
            "Peers gone from rooms, by peer-left reason and wire protocol.",
            &["reason", "protocol"],
        );
        for reason in LeaveReason::ALL {
            for protocol in Protocol::ALL {
                leaves.with_label_values(&[reason.as_str(), protocol.as_str()]);
            }
        }
        let joins = counter_vec(
            r,
            "chatsubo_joins_total",
            "Successful joins (resumes not included), by wire protocol.",
            &["protocol"],
        );
        let reconnections = counter_vec(
            r,
            "chatsubo_reconnections_total",
            "How joins with a resumeToken ended: resumed, expired or invalid.",
            &["outcome"],
        );
        touch(&reconnections, &[&["resumed"], &["expired"], &["invalid"]]);
        RoomMetrics {
            active_rooms: gauge(
                r,
                "chatsubo_active_rooms",
                "Rooms with at least one peer, peers inside their resume grace included.",
            ),
            room_peers: histogram(
                r,
                "chatsubo_room_peers",
                "Room size after each join or leave.",
                (1..=max_room_size.max(1)).map(f64::from).collect(),
            ),
            room_full_rejections: counter(
                r,
                "chatsubo_room_full_rejections_total",
                "Joins refused with ROOM_FULL.",
            ),
            joins: Protocol::ALL
                .iter()
                .map(|p| joins.with_label_values(&[p.as_str()]))
                .collect(),
            leaves,
            reconnection_attempts: counter(
                r,
                "chatsubo_reconnection_attempts_total",
                "Joins that carried a resumeToken.",
            ),
            reconnections,
        }
    }

    pub fn leave(&self, reason: LeaveReason, protocol: Protocol) {
        self.leaves
            .with_label_values(&[reason.as_str(), protocol.as_str()])
            .inc();
    }

    pub fn joined(&self, protocol: Protocol) {
        self.joins[protocol as usize].inc();
    }
}
