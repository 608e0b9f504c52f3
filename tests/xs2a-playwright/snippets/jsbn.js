// The story's functions.js does `const { RSA } = require('./jsbn.js')` and
// says it "also includes jsbn.js", but the story does not print that file.
// This stand-in supplies exactly what functions.js uses from it:
//
//   const rsa = new RSA.key();
//   rsa.setPublic(modulusHex, exponentHex);
//   const hex = rsa.encrypt(text);   // RSAES-PKCS#1 v1.5, hex ciphertext
//
// with the behaviour of Tom Wu's JSBN rsa.js (RSAKey: pkcs1pad2 over the
// UTF-8 bytes of the text, c = m^e mod n, c.toString(16) made even-length but
// NOT left-padded to the modulus length), on top of the npm `jsbn` package's
// BigInteger. The only difference from rsa.js: the non-zero padding bytes come
// from Node's crypto.randomBytes instead of JSBN's Arcfour/Math.random pool.
const crypto = require('crypto');
const { BigInteger } = require('jsbn');

// PKCS#1 v1.5 type 2 padding of the UTF-8 bytes of s into n bytes, as a
// BigInteger (rsa.js's pkcs1pad2).
function pkcs1pad2(s, n) {
  const msg = Buffer.from(s, 'utf8');
  if (n < msg.length + 11) {
    throw new Error('Message too long for RSA');
  }
  const ba = new Array(n);
  let i = n;
  for (let j = msg.length - 1; j >= 0; j--) ba[--i] = msg[j];
  ba[--i] = 0;
  while (i > 2) {
    let b = 0;
    while (b === 0) b = crypto.randomBytes(1)[0];
    ba[--i] = b;
  }
  ba[--i] = 2;
  ba[--i] = 0;
  return new BigInteger(ba);
}

function RSAKey() {
  this.n = null;
  this.e = 0;
}

// N and E as hex strings (rsa.js: parseBigInt(N, 16), parseInt(E, 16)).
RSAKey.prototype.setPublic = function (N, E) {
  if (N != null && E != null && N.length > 0 && E.length > 0) {
    this.n = new BigInteger(N, 16);
    this.e = parseInt(E, 16);
  } else {
    throw new Error('Invalid RSA public key');
  }
};

RSAKey.prototype.doPublic = function (x) {
  return x.modPowInt(this.e, this.n);
};

// The hex of the PKCS#1 v1.5 encryption of text (rsa.js's RSAEncrypt).
RSAKey.prototype.encrypt = function (text) {
  const m = pkcs1pad2(text, (this.n.bitLength() + 7) >> 3);
  const c = this.doPublic(m);
  const h = c.toString(16);
  return (h.length & 1) === 0 ? h : '0' + h;
};

module.exports = { RSA: { key: RSAKey }, RSAKey, BigInteger };
