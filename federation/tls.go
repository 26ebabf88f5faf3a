package federation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"persona/internal/mxid"
)

// Files in the data directory holding the self-signed certificate.
const (
	certFile = "tls.crt"
	keyFile  = "tls.key"
)

// loadCertificate returns the federation listener's certificate: the one
// in certPath and keyPath when given, else the self-signed one in dir,
// made for serverName when either of its files is missing.
func loadCertificate(dir, certPath, keyPath, serverName string) (tls.Certificate, error) {
	if certPath != "" {
		cert, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return cert, fmt.Errorf("federation.tls_cert %s and federation.tls_key %s: %w", certPath, keyPath, err)
		}
		return cert, nil
	}
	certPath, keyPath = filepath.Join(dir, certFile), filepath.Join(dir, keyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	if errors.Is(certErr, os.ErrNotExist) || errors.Is(keyErr, os.ErrNotExist) {
		certPEM, keyPEM, err := selfSigned(serverName, time.Now())
		if err != nil {
			return tls.Certificate{}, err
		}
		if err := writeFileAtomic(keyPath, keyPEM); err != nil {
			return tls.Certificate{}, fmt.Errorf("write %s: %w", keyPath, err)
		}
		if err := writeFileAtomic(certPath, certPEM); err != nil {
			return tls.Certificate{}, fmt.Errorf("write %s: %w", certPath, err)
		}
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return cert, fmt.Errorf("self-signed certificate %s: %w", certPath, err)
	}
	return cert, nil
}

// selfSigned makes a certificate for serverName's host, valid for ten
// years from now, and its key, both PEM. A host that is an IP address
// gets 127.0.0.1 and ::1 as further names, so that peers on the same
// machine reach it by either loopback address.
func selfSigned(serverName string, now time.Time) (certPEM, keyPEM []byte, err error) {
	host, _, err := mxid.ParseServerName(serverName)
	if err != nil {
		return nil, nil, fmt.Errorf("server_name %q: %w", serverName, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		for _, a := range []netip.Addr{ip, netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()} {
			if !containsIP(tmpl.IPAddresses, a) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
			}
		}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

func containsIP(ips []net.IP, a netip.Addr) bool {
	for _, ip := range ips {
		if b, ok := netip.AddrFromSlice(ip); ok && b.Unmap() == a.Unmap() {
			return true
		}
	}
	return false
}
