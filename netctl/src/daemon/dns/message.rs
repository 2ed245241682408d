//! One DNS question in, one answer out: the wire format around the pure [`Table`]. The
//! common question (one plain name, class IN) is read and answered straight from the bytes
//! — no message is built, nothing but the answer is allocated —; anything else goes through
//! hickory-proto.

use std::{net::IpAddr, net::SocketAddr, sync::Arc};

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{
        rdata::{A, AAAA, PTR},
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

/// How a query came: a UDP answer must fit 512 bytes or the client's EDNS size (what does
/// not fit is cut, with TC set); a TCP answer is whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Answers a query from the container at `asker`.
pub fn handle(table: &Table, asker: IpAddr, query: &[u8], via: Transport) -> Reply {
    if let Some(r) = fast(table, asker, query, via) {
        return r;
    }
    let Ok(msg) = Message::from_bytes(query) else {
        return Reply::Ignore;
    };
    if msg.message_type() != MessageType::Query {
        return Reply::Ignore;
    }
    let limit = match via {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => msg.extensions().as_ref().map_or(PLAIN_UDP, |e| {
            usize::from(e.max_payload()).clamp(PLAIN_UDP, EDNS_UDP)
        }),
    };
    let respond = |m: &Message, code, answers| respond(m, code, answers, limit);
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
        RecordType::AAAA => QType::Aaaa,
        RecordType::PTR => QType::Ptr,
        _ => QType::Other,
    };
    let name = q.name().clone();
    match table.lookup(asker, qname, qtype) {
        Answer::Addrs(ips) => {
            let records = ips
                .iter()
                .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(*ip))))
                .collect();
            respond(&msg, ResponseCode::NoError, records)
        }
        Answer::Addrs6(ips) => {
            let records = ips
                .iter()
                .map(|ip| Record::from_rdata(name.clone(), TTL, RData::AAAA(AAAA(*ip))))
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

const QR: u16 = 0x8000;
const OPCODE: u16 = 0x7800;
const AA: u16 = 0x0400;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_PTR: u16 = 12;
const CLASS_IN: u16 = 1;
const TYPE_OPT: u16 = 41;
/// Our EDNS UDP size (the DNS flag day's 1232): what we say, and the most we send.
const EDNS_UDP: usize = 1232;
/// Our OPT record: root name, type 41, our UDP size, no extended code or flags, no data.
const OPT: [u8; 11] = [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];
/// A name compression pointer to the question's name (offset 12).
const TO_QNAME: [u8; 2] = [0xc0, 0x0c];
/// What fits a UDP answer when the client did not say more (no EDNS).
const PLAIN_UDP: usize = 512;

/// The common question, answered from the bytes: a standard query with one question of
/// plain labels, class IN, nothing else but maybe an EDNS record. None: take the full path.
fn fast(table: &Table, asker: IpAddr, q: &[u8], via: Transport) -> Option<Reply> {
    let word = |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?])) };
    let flags = word(2)?;
    if flags & (QR | OPCODE | TC) != 0 || word(4)? != 1 || word(6)? != 0 || word(8)? != 0 {
        return None;
    }
    let edns = match word(10)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    // The name, lowercased into a buffer: "web.front".
    let mut name = [0u8; 255];
    let (mut len, mut i) = (0usize, 12usize);
    loop {
        let l = *q.get(i)? as usize;
        i += 1;
        if l == 0 {
            break;
        }
        // 64 and above: a compression pointer or an extended label.
        let label = q.get(i..i + l).filter(|_| l < 64)?;
        i += l;
        if len + l + 1 > name.len() || label.iter().any(|b| !b.is_ascii_graphic() || *b == b'.') {
            return None;
        }
        if len > 0 {
            name[len] = b'.';
            len += 1;
        }
        for b in label {
            name[len] = b.to_ascii_lowercase();
            len += 1;
        }
    }
    let (qtype, qclass) = (word(i)?, word(i + 2)?);
    let question = &q[12..i + 4];
    if qclass != CLASS_IN {
        return None;
    }
    // EDNS: the client's UDP size from its OPT record (root name, type 41, class = size).
    let udp_size = match edns {
        true if q.get(i + 4) == Some(&0) && word(i + 5)? == TYPE_OPT => {
            usize::from(word(i + 7)?).clamp(PLAIN_UDP, EDNS_UDP)
        }
        true => return None,
        false => PLAIN_UDP,
    };
    // Over TCP the whole answer (a message's length is 16 bits).
    let size = match via {
        Transport::Udp => udp_size,
        Transport::Tcp => usize::from(u16::MAX),
    };
    let qname = std::str::from_utf8(&name[..len]).ok()?;
    let kind = match qtype {
        TYPE_A => QType::A,
        TYPE_AAAA => QType::Aaaa,
        TYPE_PTR => QType::Ptr,
        _ => QType::Other,
    };
    let mut out = Vec::with_capacity(12 + question.len() + 64);
    let header = |out: &mut Vec<u8>, code: ResponseCode, aa: bool, tc: bool, answers: u16| {
        let mut f = QR | RA | (flags & RD) | u16::from(code.low());
        if aa {
            f |= AA;
        }
        if tc {
            f |= TC;
        }
        out.extend_from_slice(&q[..2]);
        out.extend_from_slice(&f.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&answers.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, u8::from(edns)]);
        out.extend_from_slice(question);
    };
    // An EDNS question gets our OPT record back, after the answers (RFC 6891).
    let opt = |out: &mut Vec<u8>| {
        if edns {
            out.extend_from_slice(&OPT);
        }
    };
    let record = |out: &mut Vec<u8>, rtype: u16, rdata: &[u8]| {
        out.extend_from_slice(&TO_QNAME);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    };
    // Address records: as many as fit the client's UDP size (512 without EDNS), and TC.
    let records = |out: &mut Vec<u8>, rtype: u16, rdata: &[&[u8]]| {
        let room = size - 12 - question.len() - if edns { OPT.len() } else { 0 };
        let each = TO_QNAME.len() + 10 + rdata.first().map_or(0, |r| r.len());
        let n = rdata.len().min(room / each);
        header(out, ResponseCode::NoError, true, n < rdata.len(), n as u16);
        for r in &rdata[..n] {
            record(out, rtype, r);
        }
        opt(out);
    };
    let bare = |code: ResponseCode, aa: bool| {
        let mut out = Vec::with_capacity(12 + question.len() + OPT.len());
        header(&mut out, code, aa, false, 0);
        opt(&mut out);
        Some(Reply::Answer(out))
    };
    match table.lookup(asker, qname, kind) {
        Answer::Addrs(ips) => {
            let rdata: Vec<[u8; 4]> = ips.iter().map(|ip| ip.octets()).collect();
            let rdata: Vec<&[u8]> = rdata.iter().map(|r| &r[..]).collect();
            records(&mut out, TYPE_A, &rdata);
        }
        Answer::Addrs6(ips) => {
            let rdata: Vec<[u8; 16]> = ips.iter().map(|ip| ip.octets()).collect();
            let rdata: Vec<&[u8]> = rdata.iter().map(|r| &r[..]).collect();
            records(&mut out, TYPE_AAAA, &rdata);
        }
        Answer::Ptr(target) => {
            let mut rdata = Vec::with_capacity(target.len() + 2);
            for label in target.split('.') {
                let label = &label.as_bytes()[..label.len().min(63)];
                rdata.push(label.len() as u8);
                rdata.extend_from_slice(label);
            }
            rdata.push(0);
            header(&mut out, ResponseCode::NoError, true, false, 1);
            record(&mut out, TYPE_PTR, &rdata);
            opt(&mut out);
        }
        Answer::NoData => return bare(ResponseCode::NoError, true),
        Answer::NxDomain => return bare(ResponseCode::NXDomain, true),
        Answer::ServFail => return bare(ResponseCode::ServFail, false),
        Answer::Refused => return bare(ResponseCode::Refused, false),
        Answer::Forward(servers) => return Some(Reply::Forward(servers)),
    }
    Some(Reply::Answer(out))
}

/// The answer to `q`, cut to `limit` bytes: records that do not fit are left off and TC set.
fn respond(q: &Message, code: ResponseCode, mut answers: Vec<Record>, limit: usize) -> Reply {
    let mut truncated = false;
    loop {
        let Ok(b) = build(q, code, &answers, truncated).to_bytes() else {
            return Reply::Ignore;
        };
        if b.len() <= limit {
            return Reply::Answer(b);
        }
        if answers.pop().is_none() {
            // Too long without a record: the questions themselves (a FORMERR echoing many).
            // The header alone then, TC set.
            let mut m = build(q, code, &[], true);
            m.take_queries();
            return m.to_bytes().map_or(Reply::Ignore, Reply::Answer);
        }
        truncated = true;
    }
}

fn build(q: &Message, code: ResponseCode, answers: &[Record], truncated: bool) -> Message {
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_authoritative(code != ResponseCode::Refused && code != ResponseCode::ServFail)
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code)
        .set_truncated(truncated)
        .add_queries(q.queries().iter().cloned())
        .add_answers(answers.iter().cloned());
    if let Some(e) = q.extensions() {
        // An EDNS question gets our OPT record back (RFC 6891).
        let mut ours = hickory_proto::op::Edns::new();
        ours.set_max_payload(EDNS_UDP as u16);
        ours.set_version(e.version());
        m.set_edns(ours);
    }
    m
}

/// SERVFAIL for a query whose upstream servers did not answer.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_bytes(query).ok()?;
    match respond(
        &msg,
        ResponseCode::ServFail,
        Vec::new(),
        usize::from(u16::MAX),
    ) {
        Reply::Answer(b) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::fixtures::{container, net},
        model::state::State,
    };
    use hickory_proto::op::Query;

    fn ask(t: &Table, from: &str, name: &str, ty: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(4242).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        answer(t, from, &m, Transport::Udp).0
    }

    /// The answer to `m` from `from` over `via`, and its size on the wire.
    fn answer(t: &Table, from: &str, m: &Message, via: Transport) -> (Message, usize) {
        match handle(t, from.parse().unwrap(), &m.to_bytes().unwrap(), via) {
            Reply::Answer(b) => (Message::from_bytes(&b).unwrap(), b.len()),
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
            handle(
                &t,
                "10.1.0.2".parse().unwrap(),
                &m.to_bytes().unwrap(),
                Transport::Udp
            ),
            Reply::Forward(_)
        ));
        assert!(matches!(
            handle(
                &t,
                "10.1.0.2".parse().unwrap(),
                b"\x01\x02garbage",
                Transport::Udp
            ),
            Reply::Ignore
        ));
        let sf = Message::from_bytes(&servfail(&m.to_bytes().unwrap()).unwrap()).unwrap();
        assert_eq!(sf.response_code(), ResponseCode::ServFail);
    }

    /// 48 containers c2…c49 on front, all with the alias `many`.
    fn many_table() -> Table {
        let mut s = State::default();
        s.networks
            .insert("front".into(), net("front", "10.1.0.0/24"));
        for i in 2..50u8 {
            let mut c = container(
                &format!("c{i}"),
                &format!("{i:0>13}"),
                &[("front", &format!("10.1.0.{i}"))],
            );
            c.endpoints[0].aliases = vec!["many".into()];
            s.containers.insert(c.name.clone(), c);
        }
        Table::build(&s, &[], &[])
    }

    #[test]
    fn fast_path_keeps_the_question_and_truncates_like_a_server_should() {
        let t = many_table();
        // The client's spelling of the name comes back as it was asked (0x20 randomisation).
        let r = ask(&t, "10.1.0.2", "C3.", RecordType::A);
        assert_eq!(r.queries()[0].name().to_ascii(), "C3.");
        assert_eq!(r.answers()[0].name().to_ascii(), "C3.");
        // 48 addresses do not fit 512 bytes without EDNS: as many as fit, TC set.
        let r = ask(&t, "10.1.0.2", "many.", RecordType::A);
        assert!(r.truncated());
        assert!(
            r.answers().len() >= 25 && r.answers().len() < 48,
            "{}",
            r.answers().len()
        );
        // With EDNS all of them.
        let mut m = Message::new();
        m.set_id(7);
        m.add_query(Query::query(
            Name::from_ascii("many.").unwrap(),
            RecordType::A,
        ));
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
        let (r, _) = answer(&t, "10.1.0.2", &m, Transport::Udp);
        assert_eq!((r.answers().len(), r.truncated()), (48, false));
        assert_eq!(r.extensions().as_ref().map(|e| e.max_payload()), Some(1232));
        // Two questions: the full path, which refuses the form.
        let mut m = Message::new();
        m.add_query(Query::query(
            Name::from_ascii("c3.").unwrap(),
            RecordType::A,
        ));
        m.add_query(Query::query(
            Name::from_ascii("c4.").unwrap(),
            RecordType::A,
        ));
        let (r, _) = answer(&t, "10.1.0.2", &m, Transport::Udp);
        assert_eq!(r.response_code(), ResponseCode::FormErr);
    }

    /// `many` on 48 containers, asked over `via` with `edns` (a UDP size) and, to force the
    /// full path, an extra additional record the fast path does not read.
    fn many(via: Transport, edns: Option<u16>, full_path: bool) -> (Message, usize) {
        let t = many_table();
        let mut m = Message::new();
        m.set_id(9);
        m.add_query(Query::query(
            Name::from_ascii("many.").unwrap(),
            RecordType::A,
        ));
        if let Some(size) = edns {
            let mut e = hickory_proto::op::Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        if full_path {
            m.add_additional(Record::from_rdata(
                Name::from_ascii("x.").unwrap(),
                1,
                RData::A(A("192.0.2.1".parse().unwrap())),
            ));
        }
        answer(&t, "10.1.0.2", &m, via)
    }

    /// Found by the dns_message fuzz target: a query of four long questions without EDNS got
    /// a 534-byte FORMERR over UDP, echoing them all.
    #[test]
    fn a_formerr_fits_udp_too() {
        let t = many_table();
        let mut m = Message::new();
        m.set_id(77);
        // Four names nothing in common (no compression): 4 × 185 bytes.
        for c in ['a', 'b', 'c', 'd'] {
            let label = c.to_string().repeat(60);
            let name = format!("{label}.{label}.{label}.");
            m.add_query(Query::query(
                Name::from_ascii(&name).unwrap(),
                RecordType::A,
            ));
        }
        assert!(m.to_bytes().unwrap().len() > 512);
        let (r, len) = answer(&t, "10.1.0.2", &m, Transport::Udp);
        assert!(len <= 512, "{len}");
        assert_eq!((r.id(), r.response_code()), (77, ResponseCode::FormErr));
        assert!(r.truncated() && r.queries().is_empty());
        // Over TCP it is whole.
        let (r, _) = answer(&t, "10.1.0.2", &m, Transport::Tcp);
        assert_eq!(r.queries().len(), 4);
    }

    #[test]
    fn udp_answers_fit_the_clients_size_and_tcp_answers_are_whole() {
        for full_path in [false, true] {
            // TCP: all 48, never truncated, whatever EDNS says.
            for edns in [None, Some(512)] {
                let (r, _) = many(Transport::Tcp, edns, full_path);
                assert_eq!(
                    (r.answers().len(), r.truncated()),
                    (48, false),
                    "{full_path}"
                );
            }
            // UDP without EDNS: at most 512 bytes, TC set.
            let (r, len) = many(Transport::Udp, None, full_path);
            assert!(
                len <= 512 && r.truncated() && !r.answers().is_empty(),
                "{full_path} {len}"
            );
            // UDP with EDNS 1232: everything fits (48 × 16 bytes).
            let (r, len) = many(Transport::Udp, Some(1232), full_path);
            assert!(len <= 1232, "{len}");
            assert_eq!(
                (r.answers().len(), r.truncated()),
                (48, false),
                "{full_path}"
            );
            assert!(r.extensions().is_some(), "OPT answered");
            // A client that says less than 512 still gets 512.
            let (_, len) = many(Transport::Udp, Some(100), full_path);
            assert!(len <= 512);
        }
    }
}
