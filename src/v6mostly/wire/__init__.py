"""Wire codecs: checksums, IP/ICMP constants, pcap files. No I/O beyond file-like objects."""
