package main

import "fmt"

// onOff is a flag spelled on|off that sets *off when off.
type onOff struct{ off *bool }

func (o onOff) String() string {
	if o.off != nil && *o.off {
		return "off"
	}
	return "on"
}

func (o onOff) Set(s string) error {
	switch s {
	case "on":
		*o.off = false
	case "off":
		*o.off = true
	default:
		return fmt.Errorf("%q: want on or off", s)
	}
	return nil
}

func (onOff) Type() string { return "on|off" }
