//! Evidence: what hushd keeps of the queries it answered, for the people who must account for
//! them: the query log (opt-in, every query), the anonymization both it and the evidence store
//! apply to client addresses, and `hushd evidence forget`.

pub mod anonymize;
pub mod forget;
pub mod querylog;
