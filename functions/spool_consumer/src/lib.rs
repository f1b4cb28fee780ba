//! spool_consumer: records the exchanges process_message answered without a record, from the
//! spool (an SQS FIFO queue, `handler`), and from last-resort log lines (`replay`).

pub mod handler;
pub mod replay;
