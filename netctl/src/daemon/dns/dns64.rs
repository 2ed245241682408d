//! DNS64 (RFC 6147) for containers with IPv6 alone: a forwarded AAAA question whose answer
//! has no AAAA record is asked again as A, and the IPv4 addresses come back as AAAA records
//! in 64:ff9b::/96, which the datapath's NAT64 reaches. Pure functions over the wire bytes
//! (the forwarding itself is `serve`'s).

use std::net::Ipv6Addr;

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{rdata::AAAA, RData, Record, RecordType},
    serialize::binary::{BinDecodable, BinEncodable},
};

/// The well-known prefix (RFC 6052).
const PREFIX: [u8; 12] = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];

/// The A question to ask when `answer` (to the AAAA `query`) has no AAAA record but says the
/// name exists (NOERROR); None: the answer stands as it is.
pub fn a_query(query: &[u8], answer: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_bytes(query).ok()?;
    let [question] = q.queries() else {
        return None;
    };
    if question.query_type() != RecordType::AAAA {
        return None;
    }
    let a = Message::from_bytes(answer).ok()?;
    let has_aaaa = a
        .answers()
        .iter()
        .any(|r| r.record_type() == RecordType::AAAA);
    if a.response_code() != ResponseCode::NoError || has_aaaa || a.truncated() {
        return None;
    }
    let mut ask = q.clone();
    let mut question = question.clone();
    question.set_query_type(RecordType::A);
    ask.take_queries();
    ask.add_query(question);
    ask.to_bytes().ok()
}

/// The answer to the AAAA `query` made from `a_answer` (the A question's): its A records as
/// AAAA records in 64:ff9b::/96, its other records (a CNAME chain) as they are. None when it
/// has no A record (the original answer is given then).
pub fn synthesize(query: &[u8], a_answer: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_bytes(query).ok()?;
    let a = Message::from_bytes(a_answer).ok()?;
    if a.response_code() != ResponseCode::NoError || a.message_type() != MessageType::Response {
        return None;
    }
    let mut answers = Vec::new();
    let mut any = false;
    for r in a.answers() {
        match r.data() {
            RData::A(v4) => {
                any = true;
                let o = v4.0.octets();
                let mut b = [0u8; 16];
                b[..12].copy_from_slice(&PREFIX);
                b[12..].copy_from_slice(&o);
                let six = RData::AAAA(AAAA(Ipv6Addr::from(b)));
                answers.push(Record::from_rdata(r.name().clone(), r.ttl(), six));
            }
            _ => answers.push(r.clone()),
        }
    }
    if !any {
        return None;
    }
    let mut out = Message::new();
    out.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(a.recursion_available())
        .set_response_code(ResponseCode::NoError);
    out.add_queries(q.queries().iter().cloned());
    out.add_answers(answers);
    out.to_bytes().ok()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::{
        op::Query,
        rr::{rdata::A, Name},
    };

    use super::*;

    fn query(t: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7).set_recursion_desired(true);
        m.add_query(Query::query(
            Name::from_ascii("v4only.example.").unwrap(),
            t,
        ));
        m.to_bytes().unwrap()
    }

    fn answer(q: &[u8], code: ResponseCode, records: Vec<Record>) -> Vec<u8> {
        let q = Message::from_bytes(q).unwrap();
        let mut m = Message::new();
        m.set_id(q.id())
            .set_message_type(MessageType::Response)
            .set_response_code(code);
        m.add_queries(q.queries().iter().cloned());
        m.add_answers(records);
        m.to_bytes().unwrap()
    }

    #[test]
    fn an_aaaa_question_without_aaaa_is_asked_as_a_and_answered_in_64_ff9b() {
        let name = Name::from_ascii("v4only.example.").unwrap();
        let q6 = query(RecordType::AAAA);
        let nodata = answer(&q6, ResponseCode::NoError, vec![]);
        let ask = a_query(&q6, &nodata).expect("asked again");
        let ask_m = Message::from_bytes(&ask).unwrap();
        assert_eq!(ask_m.queries()[0].query_type(), RecordType::A);
        assert_eq!(ask_m.id(), 7);
        let v4 = RData::A(A(Ipv4Addr::new(192, 0, 2, 9)));
        let cname = RData::CNAME(hickory_proto::rr::rdata::CNAME(name.clone()));
        let a = answer(
            &ask,
            ResponseCode::NoError,
            vec![
                Record::from_rdata(name.clone(), 60, cname),
                Record::from_rdata(name.clone(), 30, v4),
            ],
        );
        let out = Message::from_bytes(&synthesize(&q6, &a).unwrap()).unwrap();
        assert_eq!(out.id(), 7);
        assert_eq!(out.queries()[0].query_type(), RecordType::AAAA);
        let six: Vec<_> = out
            .answers()
            .iter()
            .filter_map(|r| r.data().as_aaaa())
            .collect();
        assert_eq!(six, [&AAAA("64:ff9b::c000:209".parse().unwrap())]);
        assert_eq!(out.answers()[1].ttl(), 30);
        assert_eq!(out.answers()[0].record_type(), RecordType::CNAME);
    }

    #[test]
    fn real_aaaa_errors_and_other_questions_stand() {
        let name = Name::from_ascii("v4only.example.").unwrap();
        let q6 = query(RecordType::AAAA);
        let real = RData::AAAA(AAAA("2001:db8::1".parse().unwrap()));
        let with = answer(
            &q6,
            ResponseCode::NoError,
            vec![Record::from_rdata(name, 5, real)],
        );
        assert!(a_query(&q6, &with).is_none());
        assert!(a_query(&q6, &answer(&q6, ResponseCode::NXDomain, vec![])).is_none());
        let q4 = query(RecordType::A);
        assert!(a_query(&q4, &answer(&q4, ResponseCode::NoError, vec![])).is_none());
        // No A record either: the original (empty) answer is given.
        let ask = a_query(&q6, &answer(&q6, ResponseCode::NoError, vec![])).unwrap();
        assert!(synthesize(&q6, &answer(&ask, ResponseCode::NoError, vec![])).is_none());
        assert!(a_query(b"junk", b"junk").is_none());
    }
}
