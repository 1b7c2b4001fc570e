package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/loupe-project/loupe/otlp/otlptest"
)

// ReceiverChildEnv makes loupebench the OTLP keep-up round's receiver
// (RunReceiverChild) instead of the harness.
const ReceiverChildEnv = "LOUPEBENCH_OTLP_RECEIVER"

// RunReceiverChild serves OTLP/gRPC with the collector's pdata receiver on
// the listener inherited as fd 3, and answers every line on stdin with the
// number of log records received so far. It returns when stdin closes.
func RunReceiverChild() error {
	lis, err := net.FileListener(os.NewFile(3, "otlp-listener"))
	if err != nil {
		return fmt.Errorf("otlp receiver: %w", err)
	}
	r := otlptest.Serve(lis)
	defer r.Stop()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if _, err := fmt.Println(r.Count()); err != nil {
			return err
		}
	}
	return sc.Err()
}

// nicedReceiver is an OTLP receiver in a child process at nice 19. The
// keep-up round measures whether exporting makes the agent lose events;
// a collector runs on other machines, but here it would share the node's
// two cores with the agent and take half a core from it at 40k records/s
// (pdata's unmarshal). At nice 19 it takes only the CPU the node leaves
// idle, and what it cannot take shows as the exporter's counted drops.
type nicedReceiver struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	addr string

	mu   sync.Mutex
	last int
}

// startNicedReceiver serves on lis (made in the agent's netns) from a
// child process; Stop it.
func startNicedReceiver(lis *net.TCPListener) (*nicedReceiver, error) {
	f, err := lis.File()
	if err != nil {
		return nil, fmt.Errorf("otlp receiver: %w", err)
	}
	defer f.Close()
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("otlp receiver: %w", err)
	}
	cmd := exec.Command("nice", "-n", "19", self)
	cmd.Env = append(os.Environ(), ReceiverChildEnv+"=1")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("otlp receiver: %w", err)
	}
	r := &nicedReceiver{cmd: cmd, in: in, out: bufio.NewReader(out), addr: lis.Addr().String()}
	if _, err := r.count(); err != nil {
		r.Stop()
		return nil, fmt.Errorf("otlp receiver: %w", err)
	}
	return r, nil
}

func (r *nicedReceiver) Addr() string { return r.addr }

// Count is the log records received so far (the last answer, if the child
// does not answer).
func (r *nicedReceiver) Count() int {
	n, _ := r.count()
	return n
}

// count asks the child; on error it returns the last answer.
func (r *nicedReceiver) count() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := io.WriteString(r.in, "count\n"); err != nil {
		return r.last, err
	}
	line, err := r.out.ReadString('\n')
	if err != nil {
		return r.last, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return r.last, errors.New("otlp receiver: bad count " + strconv.Quote(line))
	}
	r.last = n
	return n, nil
}

// Stop ends the child and waits for it.
func (r *nicedReceiver) Stop() {
	r.in.Close()
	_ = r.cmd.Wait()
}
