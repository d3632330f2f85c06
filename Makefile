# v6mostly: `make demo` and `make test` are all a newcomer needs (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT    := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

.PHONY: demo demo-site split-png man test test-floor lint bench bench-e2e bench-clat bench-scrape bench-dhcp bench-ha fuzz clean debs

# setup.py builds the optional C accelerator; a change to it or its sources reinstalls.
ACCEL_SRC := setup.py src/v6mostly/siit/_accel.c src/v6mostly/siit/_accel_xlat.h
$(STAMP): pyproject.toml $(ACCEL_SRC)
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { apt-get update -qq && $(APT) python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

# Debian packages the lab, the demo and the tests drive (command -> package).
DEBS := tshark:tshark ip:iproute2 nft:nftables ping:iputils-ping tracepath:iputils-tracepath \
        curl:curl traceroute:traceroute iperf3:iperf3 ethtool:ethtool dnsmasq:dnsmasq-base \
        conntrack:conntrack dig:bind9-dnsutils tayga:tayga sysctl:procps \
        dhcpcd:dhcpcd-base dhclient:isc-dhcp-client busybox:busybox kea-dhcp4:kea-dhcp4-server \
        prometheus:prometheus promtool:prometheus bird:bird2 birdc:bird2 conntrackd:conntrackd
debs:
	@missing=""; for cp in $(DEBS); do c=$${cp%%:*}; p=$${cp#*:}; \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$c >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing; run as root" >&2; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && $(APT) $$missing >/dev/null; fi

# The PLAT seen from an IPv6-only client (ping, curl, traceroute, iperf3), then the whole
# site: legacy (NAT44), mostly (dhcpcd + option 108, CLAT) and v6only clients side by side.
demo: $(STAMP) debs
	$(BIN)/v6mostly lab demo
	@echo
	$(BIN)/v6mostly lab demo --site
	@$(MAKE) --no-print-directory split-png

# The README's picture of the traffic split, drawn from the Grafana dashboard's own
# queries against the lab's Prometheus; only with matplotlib (pip install -e '.[plot]').
split-png: $(STAMP) debs
	@if $(BIN)/python -c 'import matplotlib' 2>/dev/null; then \
	  $(BIN)/python tools/split_png.py docs/traffic-split.png; \
	else echo "(no matplotlib: pip install -e '.[plot]' to draw docs/traffic-split.png)"; fi

demo-site: $(STAMP) debs
	$(BIN)/v6mostly lab demo --site

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools setup.py
	$(BIN)/mypy

test: $(STAMP) debs lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests
	@# the same unit and conformance tests on the pure-Python core (the C accelerator off)
	V6MOSTLY_ACCEL=0 $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit tests/conformance

# The unit and conformance tests on the oldest dependency versions pyproject.toml
# accepts (its floors), in a venv of their own: a floor that does not work fails here.
FLOOR_VENV := .venv-floor
FLOORS := pyroute2==0.7.3 prometheus-client==0.17.0 dnspython==2.4.0
$(FLOOR_VENV)/.installed: pyproject.toml $(ACCEL_SRC)
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/pip install -q $(FLOORS) pytest hypothesis scapy pytest-benchmark
	$(FLOOR_VENV)/bin/pip install -q --no-deps -e .
	@touch $@
test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/conformance

bench: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider bench --benchmark-columns=min,median,mean,ops --benchmark-sort=name

# End to end through namespaces, v6mostly against Debian's tayga and plain kernel
# forwarding (root; a few minutes). See bench/e2e.py.
bench-e2e: $(STAMP) debs
	$(BIN)/python bench/e2e.py --seconds 5

# 464XLAT: IPv4 literals from an IPv6-only client through CLAT + the v6mostly PLAT,
# `v6mostly clat` against Debian's tayga set up as clatd runs it (root). See bench/clat.py.
bench-clat: $(STAMP) debs
	$(BIN)/python bench/clat.py --seconds 5

# Man pages (section 8) and bash completion, generated from the CLI's argparse parser.
man: $(STAMP)
	$(BIN)/python -m v6mostly.docgen man build/man
	$(BIN)/python -m v6mostly.docgen bash build/v6mostly.bash-completion

# Metrics scrape time of the PLAT with 100,000 NAPT66 sessions, and ping meanwhile (root).
bench-scrape: $(STAMP) debs
	$(BIN)/python bench/conntrack_scrape.py --sessions 100000

# DHCPv4 exchanges per second, v6mostly (SQLite leases) against Debian's Kea (root).
bench-dhcp: $(STAMP) debs
	$(BIN)/python bench/dhcp_load.py --seconds 8 --rounds 3

# Two PLATs behind ECMP (lab up --ha): flows surviving a PLAT kill, ours against the
# report's setup (plain ECMP, no state sync), outage per flow, BGP/BFD detection time,
# conntrackd's replication rate and delay (root).
bench-ha: $(STAMP) debs
	$(BIN)/python bench/ha.py --rounds 2

fuzz: $(STAMP)
	$(BIN)/python tests/fuzz/harness.py 1000000

clean:
	rm -rf $(VENV) $(FLOOR_VENV) build src/*.egg-info src/v6mostly/siit/_accel*.so .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
