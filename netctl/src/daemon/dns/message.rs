//! One DNS question in, one answer out: the wire format (hickory-proto) around the pure
//! [`Table`].

use std::{net::Ipv4Addr, net::SocketAddr, sync::Arc};

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{
        rdata::{A, PTR},
        DNSClass, Name, RData, Record, RecordType,
    },
    serialize::binary::{BinDecodable, BinEncodable},
};

use super::table::{Answer, QType, Table};

/// Docker's TTL for container names.
pub const TTL: u32 = 600;

pub enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Relay the question to these servers and their answer back.
    Forward(Arc<[SocketAddr]>),
    /// Not a question: say nothing.
    Ignore,
}

/// Answers a query from the container at `asker`.
pub fn handle(table: &Table, asker: Ipv4Addr, query: &[u8]) -> Reply {
    let Ok(msg) = Message::from_bytes(query) else {
        return Reply::Ignore;
    };
    if msg.message_type() != MessageType::Query {
        return Reply::Ignore;
    }
    if msg.op_code() != OpCode::Query {
        return respond(&msg, ResponseCode::NotImp, Vec::new());
    }
    let [q] = msg.queries() else {
        return respond(&msg, ResponseCode::FormErr, Vec::new());
    };
    if q.query_class() != DNSClass::IN {
        return respond(&msg, ResponseCode::NotImp, Vec::new());
    }
    let qname = q.name().to_ascii().to_ascii_lowercase();
    let qname = qname.trim_end_matches('.');
    let qtype = match q.query_type() {
        RecordType::A => QType::A,
        RecordType::PTR => QType::Ptr,
        _ => QType::Other,
    };
    let name = q.name().clone();
    match table.lookup(asker, qname, qtype) {
        Answer::Addrs(ips) => {
            let records = ips
                .into_iter()
                .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(ip))))
                .collect();
            respond(&msg, ResponseCode::NoError, records)
        }
        Answer::Ptr(target) => match Name::from_str_relaxed(format!("{target}.")) {
            Ok(t) => respond(
                &msg,
                ResponseCode::NoError,
                vec![Record::from_rdata(name, TTL, RData::PTR(PTR(t)))],
            ),
            Err(_) => respond(&msg, ResponseCode::ServFail, Vec::new()),
        },
        Answer::NoData => respond(&msg, ResponseCode::NoError, Vec::new()),
        Answer::NxDomain => respond(&msg, ResponseCode::NXDomain, Vec::new()),
        Answer::ServFail => respond(&msg, ResponseCode::ServFail, Vec::new()),
        Answer::Refused => respond(&msg, ResponseCode::Refused, Vec::new()),
        Answer::Forward(servers) => Reply::Forward(servers),
    }
}

fn respond(q: &Message, code: ResponseCode, answers: Vec<Record>) -> Reply {
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_authoritative(code != ResponseCode::Refused && code != ResponseCode::ServFail)
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code)
        .add_queries(q.queries().iter().cloned())
        .add_answers(answers);
    match m.to_bytes() {
        Ok(b) => Reply::Answer(b),
        Err(_) => Reply::Ignore,
    }
}

/// SERVFAIL for a query whose upstream servers did not answer.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_bytes(query).ok()?;
    match respond(&msg, ResponseCode::ServFail, Vec::new()) {
        Reply::Answer(b) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        etc::tests::{container, net},
        state::State,
    };
    use hickory_proto::op::Query;

    fn ask(t: &Table, from: &str, name: &str, ty: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(4242).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        match handle(t, from.parse().unwrap(), &m.to_bytes().unwrap()) {
            Reply::Answer(b) => Message::from_bytes(&b).unwrap(),
            _ => panic!("expected an answer"),
        }
    }

    #[test]
    fn answers_on_the_wire() {
        let mut s = State::default();
        s.networks
            .insert("front".into(), net("front", "10.1.0.0/24"));
        for (n, id, ip) in [
            ("web", "aaaaaaaaaaaa0", "10.1.0.2"),
            ("db", "bbbbbbbbbbbb0", "10.1.0.3"),
        ] {
            s.containers
                .insert(n.into(), container(n, id, &[("front", ip)]));
        }
        let t = Table::build(&s, &[], &["192.0.2.1".parse().unwrap()]);

        let r = ask(&t, "10.1.0.2", "DB.", RecordType::A);
        assert_eq!(r.id(), 4242);
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.authoritative() && r.recursion_available());
        assert_eq!(r.answers().len(), 1);
        assert_eq!(r.answers()[0].ttl(), TTL);
        assert_eq!(
            r.answers()[0].data(),
            &RData::A(A("10.1.0.3".parse().unwrap()))
        );

        let r = ask(&t, "10.1.0.2", "db.", RecordType::AAAA);
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.answers().is_empty(), "NODATA for AAAA");

        let r = ask(&t, "10.1.0.2", "2.0.1.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(
            r.answers()[0].data(),
            &RData::PTR(PTR(Name::from_ascii("web.front.").unwrap()))
        );

        let r = ask(&t, "10.1.0.2", "nope.front.", RecordType::A);
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        let r = ask(&t, "10.9.0.1", "db.", RecordType::A);
        assert_eq!(r.response_code(), ResponseCode::Refused);

        let mut m = Message::new();
        m.add_query(Query::query(Name::from_ascii("x.").unwrap(), RecordType::A));
        assert!(matches!(
            handle(&t, "10.1.0.2".parse().unwrap(), &m.to_bytes().unwrap()),
            Reply::Forward(_)
        ));
        assert!(matches!(
            handle(&t, "10.1.0.2".parse().unwrap(), b"\x01\x02garbage"),
            Reply::Ignore
        ));
        let sf = Message::from_bytes(&servfail(&m.to_bytes().unwrap()).unwrap()).unwrap();
        assert_eq!(sf.response_code(), ResponseCode::ServFail);
    }
}
