//! Unit tests of the chat state: every command and room rule without a socket.

use super::*;

#[test]
fn a_long_reply_costs_one_token_per_hundred_lines() {
    assert_eq!(Chat::reply_cost(1), 0, "the line's own token pays");
    assert_eq!(Chat::reply_cost(199), 0);
    assert_eq!(Chat::reply_cost(200), 1);
    assert_eq!(Chat::reply_cost(10_001), 99);
}
