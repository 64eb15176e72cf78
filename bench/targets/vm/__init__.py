"""The reference archive inside a QEMU guest: image (build), qemu (launch), network, kvm (probe), export."""
