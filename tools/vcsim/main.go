// Command vcsim: VMware's ESXi/vCenter simulator (govmomi's simulator package) for pacsbench's esxi tests.
//
// Debian's golang-github-vmware-govmomi-dev ships the simulator package without its vcsim command,
// so this is our own small main around it. It listens with TLS on -listen (port 0: a free one),
// prints one JSON line on stdout ({"url", "thumbprint_sha1", "thumbprint_sha256", "cert_file"}),
// writes the served certificate (PEM) to -cert-out so a client can verify it, and on SIGTERM or
// SIGINT closes the server and removes the model's temporary datastore folders.
//
// Build: GO111MODULE=off GOPATH=/usr/share/gocode go build -o vcsim ./tools/vcsim
package main

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func hexColons(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func main() {
	vpx := flag.Bool("vpx", false, "simulate a vCenter (default: a standalone ESXi host)")
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0: a free port)")
	user := flag.String("username", "root", "the user a client logs in as")
	password := flag.String("password", "", "that user's password")
	certFile := flag.String("tlscert", "", "PEM certificate to serve (default: Go's test certificate for 127.0.0.1)")
	keyFile := flag.String("tlskey", "", "PEM key of -tlscert")
	certOut := flag.String("cert-out", "", "write the served certificate here (PEM)")
	flag.Parse()

	model := simulator.ESX()
	if *vpx {
		model = simulator.VPX()
	}
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: model: %v", err)
	}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *password)}
	model.Service.TLS = new(tls.Config)
	if *certFile != "" {
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			model.Remove()
			log.Fatalf("vcsim: certificate: %v", err)
		}
		model.Service.TLS.Certificates = []tls.Certificate{pair}
	}
	server := model.Service.NewServer()
	der := server.Certificate().Raw
	if *certOut != "" {
		block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		if err := os.WriteFile(*certOut, block, 0o644); err != nil {
			server.Close()
			model.Remove()
			log.Fatalf("vcsim: %v", err)
		}
	}
	sha1sum, sha256sum := sha1.Sum(der), sha256.Sum256(der)
	served := *server.URL
	served.User = nil // the URL line carries no password
	line, _ := json.Marshal(map[string]string{
		"url":               served.String(),
		"thumbprint_sha1":   hexColons(sha1sum[:]),
		"thumbprint_sha256": hexColons(sha256sum[:]),
		"cert_file":         *certOut,
	})
	fmt.Println(string(line))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	server.Close()
	model.Remove()
}
