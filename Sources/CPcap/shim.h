// libpcap (libpcap-dev): pcap files and BPF filters for capture ports and live capture.
#include <pcap/pcap.h>
