"""The testbed's VM: namespace model and QEMU guest, their migration and the
controller's hypervisor driver for them."""
