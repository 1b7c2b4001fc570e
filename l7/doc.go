// Package l7 parses the L7 bytes the datapath copies (DNS messages, HTTP/1.x
// request and status lines) and pairs requests with responses, without a
// proxy. Everything here reads bytes from the network: parsers refuse
// anything that is not strictly what they expect, never panic (fuzzed), and
// keep none of the payload beyond the fields they return. Pairing tables
// are bounded.
//
// DNS is parsed with golang.org/x/net/dns/dnsmessage: a strict,
// allocation-light parser from the Go project that the module already
// depends on, which reads a message section by section so a message cut at
// the capture length still yields its header and questions. miekg/dns would
// add a dependency and unpacks whole messages only.
package l7
