package bench

import (
	"fmt"
	"os"
	"testing"
)

// TestMain lets the test binary be the OTLP keep-up round's receiver
// child, as loupebench is (startNicedReceiver runs os.Executable).
func TestMain(m *testing.M) {
	if os.Getenv(ReceiverChildEnv) != "" {
		if err := RunReceiverChild(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
