//! Unit tests of the chat state: every command and room rule without a socket.

use super::*;
