package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// HostIfnamePrefix starts every host-side veth loupe-cni creates.
const HostIfnamePrefix = "lxc"

// HostIfname names the host side of an attachment's veth pair: "lxc" and
// 11 hex digits of sha256(containerID/ifname), 14 bytes, under IFNAMSIZ.
// It is a pure function of the attachment, so DEL and GC find the link
// without the pod's netns, and two interfaces of one pod get two names.
func HostIfname(containerID, ifname string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifname))
	return HostIfnamePrefix + hex.EncodeToString(sum[:])[:11]
}

// isLoupeHostIfname matches names HostIfname produces.
func isLoupeHostIfname(name string) bool {
	if len(name) != len(HostIfnamePrefix)+11 || !strings.HasPrefix(name, HostIfnamePrefix) {
		return false
	}
	for _, c := range name[len(HostIfnamePrefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
