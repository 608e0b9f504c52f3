//! BER-TLV as cards send it. Invariants: no panic on any bytes; every
//! object parsed is re-encoded to bytes that parse back to the same tag
//! and value; `find` agrees with a walk of the tree; a DOL's data length
//! is the sum of its entries.
use bankbridge_cap::tlv;

fn walk(bytes: &[u8], depth: usize) {
    let Ok(objects) = tlv::parse(bytes) else {
        return;
    };
    for object in objects {
        let encoded = tlv::encode(object.tag, object.value);
        let back = tlv::parse(&encoded).expect("an encoded object parses");
        assert_eq!(back.len(), 1, "one object in, one out: {encoded:02X?}");
        assert_eq!((back[0].tag, back[0].value), (object.tag, object.value));
        if object.is_constructed() && depth < 64 {
            walk(object.value, depth + 1);
        }
    }
}

pub fn run(data: &[u8]) {
    walk(data, 0);
    // The first tag found anywhere is found by `find`.
    if let Ok(objects) = tlv::parse(data)
        && let Some(first) = objects.first()
    {
        assert_eq!(tlv::find(data, first.tag), Ok(Some(first.value)));
        assert_eq!(tlv::find_path(data, &[first.tag]), Ok(Some(first.value)));
    }
    let _ = tlv::find_path(data, &[0x6F, 0xA5, 0x9F38]);
    if let Ok(dol) = tlv::parse_dol(data) {
        let total: usize = dol.iter().map(|e| e.len).sum();
        assert_eq!(tlv::dol_data_len(&dol), total);
    }
}
