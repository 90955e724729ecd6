// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm-vmm: a small VMM that boots a Linux bzImage on the KVM x86 ioctl
 * ABI, with several vCPUs, on /dev/rkvm or on stock /dev/kvm.
 *
 *   rkvm-vmm [--dev /dev/rkvm] --kernel bzImage [--initrd cpio.gz]
 *            [--cmdline "..."] [--cpus N] [--mem MiB] [--timeout S]
 *            [--marker TEXT] [--system-map FILE] [--verbose]
 *
 * Defaults: one vCPU, 256 MiB, "console=ttyS0", 300 s. --system-map names
 * the guest kernel's System.map, to say which function each vCPU was in
 * when a run fails; --verbose lists every access to a port or address
 * without a device and the registers at the end.
 *
 * Exits 0 once the guest printed a console line containing the marker
 * (default "rkvm-guest: hello") and then reset the machine; otherwise 1,
 * with the reason on stderr: a timeout, a triple fault (KVM_EXIT_SHUTDOWN),
 * an internal error or failed entry, an exit it does not expect, a reset
 * without the marker, or a failing ioctl.
 *
 * The machine
 * -----------
 * - RAM from GPA 0 (one memslot, at most 3 GiB: the 32-bit MMIO hole stays
 *   free), described by an e820 map with the BIOS area 0x9fc00-0xfffff
 *   reserved.
 * - Boot: the Linux x86 boot protocol's 64-bit entry
 *   (Documentation/arch/x86/boot.rst). The protected-mode kernel goes to
 *   1 MiB, the zero page (boot_params) gets the setup header, e820 map,
 *   command line and initrd (at the top of RAM); the BSP starts in long
 *   mode at startup_64 (load address + 0x200) with 0..4 GiB identity
 *   mapped by 2 MiB pages, a GDT with __BOOT_CS (0x10) and __BOOT_DS
 *   (0x18), interrupts off and RSI = boot_params.
 * - vCPUs: all created up front, with the split irqchip
 *   (KVM_CAP_SPLIT_IRQCHIP): each has its local APIC in the kernel, so
 *   HLT, IPIs, the APIC timer and INIT/SIPI never reach this program. The
 *   APs start in KVM_MP_STATE_UNINITIALIZED (KVM_RUN waits for INIT/SIPI
 *   and returns EAGAIN) and are brought up by the guest. CPUID is
 *   KVM_GET_SUPPORTED_CPUID's with per-vCPU APIC IDs (leaf 1, 0xb/0x1f,
 *   AMD's 0x80000008 and 0x8000001e); the KVM leaves 0x40000000/1 are
 *   passed on as the hypervisor reports them.
 * - CPU discovery: an Intel MultiProcessor table (spec 1.4) at 0xf0000,
 *   which the test kernel reads (CONFIG_X86_MPPARSE): the processors,
 *   an ISA bus, one IOAPIC and ISA IRQs 0-15 on its pins 0-15.
 * - The IOAPIC (82093AA, version 0x11, 24 pins, at 0xfec00000) is
 *   emulated here, as the split irqchip leaves it to the VMM: its
 *   redirection entries turn a rising edge on a pin into KVM_SIGNAL_MSI.
 *   Only edge-triggered pins are wired (the ISA devices here are edge
 *   triggered); a level-triggered entry that fires stops the VMM with an
 *   error rather than deliver it wrongly.
 * - Console: an 8250/16550A UART at 0x3f8, IRQ 4: what the guest writes to
 *   its transmit register goes to stdout line by line (carriage returns
 *   dropped); the line status always says the transmitter is empty,
 *   nothing is ever received, the other registers hold what is written.
 *   Its THR-empty interrupt (gated by MCR.OUT2, as on PCs) goes through
 *   the IOAPIC: the kernel's console writes by polling, but a userspace
 *   write to /dev/console (the guest's /init prints its marker so) waits
 *   for that interrupt.
 * - Reset: the reset control register at 0xcf9 (as in PIIX/ICH chipsets):
 *   a write with RST_CPU (bit 2) resets the machine, which ends the run.
 *   The guest reboots through it with reboot=pci. There is no power-off
 *   device (no ACPI), so the guest ends with reboot(2), not power-off.
 * - Every other port reads all ones and ignores writes (no device: the
 *   PIC, PIT, CMOS, the 0x80 delay port, the keyboard controller, PCI
 *   configuration), and so does MMIO outside RAM, the IOAPIC and the
 *   in-kernel APICs.
 * - Time: there is no PIT, HPET or ACPI PM timer, and the test kernel has
 *   no kvmclock (no CONFIG_PARAVIRT), so the guest could not measure its
 *   TSC: the VMM tells it the rate (KVM_GET_TSC_KHZ) with tsc_early_khz=
 *   and tsc=reliable (the vCPUs' TSCs start together and run at one rate;
 *   without it an AMD guest with several CPUs calls its TSC unsynchronized
 *   and a clocksource watchdog would have no reference). The local APIC
 *   timer then runs in TSC-deadline mode (CPUID 1 ECX), which needs no
 *   calibration; with ARAT as well (CPUID 6 EAX, which KVM offers) the
 *   kernel does not even register the PIT as a clock event. It still looks:
 *   the early CPU calibration reads the absent PIT's counter 2 (about
 *   100000 reads of port 0x42 on AMD, where no CPUID leaf gives the rate)
 *   and the wall-clock read waits a second for the absent CMOS RTC's
 *   update flag (about 10000 reads of port 0x71): some 140000 port exits
 *   per boot, a few seconds in the emulated test hosts.
 *
 * The command line given is appended to "tsc_early_khz=<rate> tsc=reliable
 * acpi=off pci=off reboot=pci" (the machine's facts: no ACPI tables, no PCI
 * bus, reset at 0xcf9), so it can override them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <asm/bootparam.h>
#include <asm/e820.h>
#include <linux/kvm.h>

#define MAX_CPUS	8	/* the test kernel's NR_CPUS */
#define MAX_MEM_MIB	3072	/* RAM ends below the 32-bit MMIO hole */

/* Guest-physical layout of low memory. */
#define GDT_GPA		0x0500
#define BOOT_PARAMS_GPA	0x7000
#define PML4_GPA	0x9000	/* then the PDPT and four PDs */
#define CMDLINE_GPA	0x20000
#define CMDLINE_MAX	4096
#define EBDA_GPA	0x9fc00	/* e820: reserved from here to 1 MiB */
#define MPTABLE_GPA	0xf0000
#define KERNEL_GPA	0x100000

#define BOOT_CS		0x10	/* boot.rst: __BOOT_CS, __BOOT_DS */
#define BOOT_DS		0x18

#define IOAPIC_GPA	0xfec00000
#define IOAPIC_PINS	24
#define IOAPIC_VERSION	0x11
#define APIC_GPA	0xfee00000
#define APIC_VERSION	0x14	/* what the MP table says the local APICs are */

/* QEMU's choice for the two pages KVM on VMX wants below 4 GiB. */
#define IDENTITY_MAP_GPA 0xfeffc000
#define TSS_GPA		0xfeffd000

#define UART_BASE	0x3f8
#define UART_IRQ	4
#define RESET_PORT	0xcf9	/* PIIX/ICH reset control register */
#define RESET_RST_CPU	0x04

#define X86_CR0_PE	(1u << 0)
#define X86_CR0_MP	(1u << 1)
#define X86_CR0_ET	(1u << 4)
#define X86_CR0_NE	(1u << 5)
#define X86_CR0_WP	(1u << 16)
#define X86_CR0_PG	(1u << 31)
#define X86_CR4_PAE	(1u << 5)
#define EFER_LME	(1u << 8)
#define EFER_LMA	(1u << 10)

#define PTE_P		(1ull << 0)
#define PTE_RW		(1ull << 1)
#define PTE_PS		(1ull << 7)

struct vmm;

struct vcpu {
	struct vmm *vmm;
	int id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
};

/* 8250/16550A registers (offsets from UART_BASE) and bits. */
enum { UART_RX_TX, UART_IER, UART_IIR_FCR, UART_LCR, UART_MCR, UART_LSR,
	UART_MSR, UART_SCR };
#define UART_IER_THRI	0x02
#define UART_IIR_NO_INT	0x01
#define UART_IIR_THRI	0x02
#define UART_IIR_FIFOS	0xc0
#define UART_FCR_FIFO	0x01
#define UART_LCR_DLAB	0x80
#define UART_MCR_DTR	0x01
#define UART_MCR_RTS	0x02
#define UART_MCR_OUT1	0x04
#define UART_MCR_OUT2	0x08
#define UART_MCR_LOOP	0x10
#define UART_LSR_THRE	0x20
#define UART_LSR_TEMT	0x40
#define UART_MSR_CTS	0x10
#define UART_MSR_DSR	0x20
#define UART_MSR_RI	0x40
#define UART_MSR_DCD	0x80

struct uart {
	uint8_t ier, lcr, mcr, scr, fcr, dll, dlm;
	bool thr_ipending;	/* THR-empty interrupt not yet acknowledged */
	bool irq;		/* the level of its IRQ output */
	char line[1024];
	size_t len;
};

/* IOAPIC redirection entry bits. */
#define RTE_VECTOR	0xffull
#define RTE_DELIVERY	(7ull << 8)
#define RTE_DEST_LOGICAL (1ull << 11)
#define RTE_STATUS	(1ull << 12)
#define RTE_LOW_ACTIVE	(1ull << 13)
#define RTE_REMOTE_IRR	(1ull << 14)
#define RTE_LEVEL	(1ull << 15)
#define RTE_MASKED	(1ull << 16)
#define RTE_DEST_SHIFT	56
#define RTE_RO_BITS	(RTE_STATUS | RTE_REMOTE_IRR)
#define DELIVERY_LOWEST	1

struct ioapic {
	uint32_t id;
	uint32_t sel;
	uint64_t rte[IOAPIC_PINS];
	uint32_t pins;		/* each input pin's level */
};

struct vmm {
	const char *dev;
	int sys_fd, vm_fd;
	uint8_t *mem;
	uint64_t mem_size;
	int ncpus;
	struct vcpu cpu[MAX_CPUS];
	unsigned int tsc_khz;
	const char *marker;
	const char *system_map;
	bool verbose;
	struct timespec t0;

	/* The devices, and whether the run is over and how. */
	pthread_mutex_t lock;
	pthread_cond_t done_cond;
	struct uart uart;
	struct ioapic ioapic;
	uint8_t reset_ctl;
	bool marker_seen;
	bool done;
	int status;
	char why[512];
	unsigned long unknown_pio, unknown_mmio;
};

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("rkvm-vmm: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static double elapsed(struct vmm *vmm)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - vmm->t0.tv_sec) + (t.tv_nsec - vmm->t0.tv_nsec) / 1e9;
}

/*
 * Ends the run (the first caller decides how): status 0 for a clean end,
 * 1 with the reason otherwise. Called with vmm->lock held.
 */
static void finish_locked(struct vmm *vmm, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void finish_locked(struct vmm *vmm, int status, const char *fmt, ...)
{
	va_list ap;

	if (vmm->done)
		return;
	vmm->done = true;
	vmm->status = status;
	va_start(ap, fmt);
	vsnprintf(vmm->why, sizeof(vmm->why), fmt, ap);
	va_end(ap);
	pthread_cond_signal(&vmm->done_cond);
}

#define finish(vmm, status, ...) do {				\
	pthread_mutex_lock(&(vmm)->lock);				\
	finish_locked(vmm, status, __VA_ARGS__);			\
	pthread_mutex_unlock(&(vmm)->lock);				\
} while (0)

static void *gpa(struct vmm *vmm, uint64_t addr, uint64_t len)
{
	if (addr > vmm->mem_size || len > vmm->mem_size - addr)
		die("guest layout: 0x%" PRIx64 "+0x%" PRIx64 " is past the end of RAM", addr, len);
	return vmm->mem + addr;
}

/* ---- IOAPIC ---- */

/*
 * Sends pin @pin's interrupt as the MSI its redirection entry describes
 * (Intel's MSI format, which the APICs' split irqchip takes).
 */
static void ioapic_deliver(struct vmm *vmm, int pin)
{
	uint64_t rte = vmm->ioapic.rte[pin];
	unsigned int mode = (rte & RTE_DELIVERY) >> 8;
	struct kvm_msi msi = {
		.address_lo = APIC_GPA | (uint32_t)(rte >> RTE_DEST_SHIFT) << 12 |
			      (rte & RTE_DEST_LOGICAL ? 1u << 2 : 0) |
			      (mode == DELIVERY_LOWEST ? 1u << 3 : 0),
		.data = (rte & RTE_VECTOR) | mode << 8,
	};

	if (rte & RTE_LEVEL) {
		/*
		 * A level-triggered pin needs remote IRR and the EOI exits
		 * of level MSI routes; nothing here raises one.
		 */
		finish_locked(vmm, 1, "IOAPIC pin %d fired level-triggered (entry 0x%016" PRIx64
			      "): not supported, only edge-triggered pins are wired", pin, rte);
		return;
	}
	if (ioctl(vmm->vm_fd, KVM_SIGNAL_MSI, &msi) < 0)
		finish_locked(vmm, 1, "KVM_SIGNAL_MSI (pin %d, address 0x%x, data 0x%x): %s",
			      pin, msi.address_lo, msi.data, strerror(errno));
}

/* Sets input pin @pin to @level; a rising edge on an unmasked pin fires. */
static void ioapic_set_pin(struct vmm *vmm, int pin, bool level)
{
	struct ioapic *io = &vmm->ioapic;
	uint64_t rte = io->rte[pin];
	bool was = io->pins & (1u << pin);

	if (level)
		io->pins |= 1u << pin;
	else
		io->pins &= ~(1u << pin);
	if (rte & RTE_LOW_ACTIVE) {
		level = !level;
		was = !was;
	}
	/*
	 * The 82093AA datasheet: an edge on a masked pin is neither
	 * delivered nor held pending.
	 */
	if (level && !was && !(rte & RTE_MASKED))
		ioapic_deliver(vmm, pin);
}

static uint32_t ioapic_read_reg(struct ioapic *io)
{
	uint32_t sel = io->sel;

	switch (sel) {
	case 0x00:
		return io->id << 24;
	case 0x01:
		return (IOAPIC_PINS - 1) << 16 | IOAPIC_VERSION;
	case 0x02:	/* arbitration ID */
		return io->id << 24;
	}
	if (sel >= 0x10 && sel < 0x10 + 2 * IOAPIC_PINS) {
		uint64_t rte = io->rte[(sel - 0x10) / 2];

		return sel & 1 ? rte >> 32 : (uint32_t)rte;
	}
	return 0;
}

static void ioapic_write_reg(struct vmm *vmm, uint32_t val)
{
	struct ioapic *io = &vmm->ioapic;
	uint32_t sel = io->sel;
	uint64_t *rte;

	if (sel == 0x00) {
		io->id = (val >> 24) & 0xf;
		return;
	}
	if (sel < 0x10 || sel >= 0x10 + 2 * IOAPIC_PINS)
		return;		/* version and arbitration are read-only */
	rte = &io->rte[(sel - 0x10) / 2];
	if (sel & 1)
		*rte = (*rte & 0xffffffffull) | (uint64_t)val << 32;
	else
		*rte = (*rte & (0xffffffff00000000ull | RTE_RO_BITS)) | (val & ~RTE_RO_BITS);
}

/* MMIO at IOAPIC_GPA: IOREGSEL at 0x00, IOWIN at 0x10, 32 bits wide. */
static bool ioapic_mmio(struct vmm *vmm, uint64_t addr, uint8_t *data, uint32_t len, bool write)
{
	uint64_t off = addr - IOAPIC_GPA;
	uint32_t val = 0;

	if (addr < IOAPIC_GPA || off >= 0x1000)
		return false;
	if (write) {
		memcpy(&val, data, len < 4 ? len : 4);
		if (off == 0x00)
			vmm->ioapic.sel = val & 0xff;
		else if (off == 0x10)
			ioapic_write_reg(vmm, val);
	} else {
		if (off == 0x00)
			val = vmm->ioapic.sel;
		else if (off == 0x10)
			val = ioapic_read_reg(&vmm->ioapic);
		memset(data, 0, len);
		memcpy(data, &val, len < 4 ? len : 4);
	}
	return true;
}

/* ---- UART ---- */

static uint8_t uart_iir(struct uart *u)
{
	uint8_t iir = UART_IIR_NO_INT;

	if ((u->ier & UART_IER_THRI) && u->thr_ipending)
		iir = UART_IIR_THRI;
	return iir | (u->fcr & UART_FCR_FIFO ? UART_IIR_FIFOS : 0);
}

/* Drives IRQ 4 from the interrupt state; OUT2 gates it, as on PCs. */
static void uart_update_irq(struct vmm *vmm)
{
	struct uart *u = &vmm->uart;
	bool irq = (u->mcr & UART_MCR_OUT2) && !(uart_iir(u) & UART_IIR_NO_INT);

	if (irq != u->irq) {
		u->irq = irq;
		ioapic_set_pin(vmm, UART_IRQ, irq);
	}
}

static void console_flush(struct vmm *vmm)
{
	struct uart *u = &vmm->uart;

	if (!u->len)
		return;
	u->line[u->len] = '\0';
	if (strstr(u->line, vmm->marker))
		vmm->marker_seen = true;
	fputs(u->line, stdout);
	fflush(stdout);
	u->len = 0;
}

static void uart_transmit(struct vmm *vmm, uint8_t c)
{
	struct uart *u = &vmm->uart;

	if (c == '\r')
		return;
	u->line[u->len++] = c;
	if (c == '\n' || u->len == sizeof(u->line) - 1)
		console_flush(vmm);
}

static uint8_t uart_read(struct vmm *vmm, unsigned int reg)
{
	struct uart *u = &vmm->uart;
	uint8_t val, mcr = u->mcr;

	switch (reg) {
	case UART_RX_TX:
		return u->lcr & UART_LCR_DLAB ? u->dll : 0;	/* nothing received */
	case UART_IER:
		return u->lcr & UART_LCR_DLAB ? u->dlm : u->ier;
	case UART_IIR_FCR:
		val = uart_iir(u);
		/* Reading IIR while it names THR empty acknowledges that. */
		if ((val & 0x0f) == UART_IIR_THRI) {
			u->thr_ipending = false;
			uart_update_irq(vmm);
		}
		return val;
	case UART_LCR:
		return u->lcr;
	case UART_MCR:
		return u->mcr;
	case UART_LSR:
		return UART_LSR_THRE | UART_LSR_TEMT;
	case UART_MSR:
		if (mcr & UART_MCR_LOOP)
			return (mcr & UART_MCR_DTR ? UART_MSR_DSR : 0) |
			       (mcr & UART_MCR_RTS ? UART_MSR_CTS : 0) |
			       (mcr & UART_MCR_OUT1 ? UART_MSR_RI : 0) |
			       (mcr & UART_MCR_OUT2 ? UART_MSR_DCD : 0);
		/* A terminal is connected and ready. */
		return UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS;
	default:
		return u->scr;
	}
}

static void uart_write(struct vmm *vmm, unsigned int reg, uint8_t val)
{
	struct uart *u = &vmm->uart;
	uint8_t old;

	switch (reg) {
	case UART_RX_TX:
		if (u->lcr & UART_LCR_DLAB) {
			u->dll = val;
			break;
		}
		/*
		 * The byte leaves at once (in loopback mode it would go to
		 * the receiver, which this UART does not have): THR empties
		 * again, a new THR-empty interrupt, a new edge on IRQ 4.
		 */
		u->thr_ipending = false;
		uart_update_irq(vmm);
		if (!(u->mcr & UART_MCR_LOOP))
			uart_transmit(vmm, val);
		u->thr_ipending = true;
		uart_update_irq(vmm);
		break;
	case UART_IER:
		if (u->lcr & UART_LCR_DLAB) {
			u->dlm = val;
			break;
		}
		old = u->ier;
		u->ier = val & 0x0f;
		/* Enabling it with THR empty raises the THR-empty interrupt. */
		if ((old ^ u->ier) & UART_IER_THRI)
			u->thr_ipending = u->ier & UART_IER_THRI;
		uart_update_irq(vmm);
		break;
	case UART_IIR_FCR:
		u->fcr = val & 0xc9;	/* FIFO enable, DMA mode, trigger level */
		uart_update_irq(vmm);
		break;
	case UART_LCR:
		u->lcr = val;
		break;
	case UART_MCR:
		u->mcr = val & 0x1f;
		uart_update_irq(vmm);
		break;
	case UART_SCR:
		u->scr = val;
		break;
	}
	/* LSR and MSR are read-only. */
}

/* ---- port I/O and MMIO ---- */

/* One byte of port I/O. Returns false for a port with no device. */
static bool pio_byte(struct vmm *vmm, uint16_t port, uint8_t *val, bool write)
{
	if (port >= UART_BASE && port < UART_BASE + 8) {
		if (write)
			uart_write(vmm, port - UART_BASE, *val);
		else
			*val = uart_read(vmm, port - UART_BASE);
		return true;
	}
	if (port == RESET_PORT) {
		if (!write) {
			*val = vmm->reset_ctl;
		} else {
			vmm->reset_ctl = *val & ~RESET_RST_CPU;
			if (*val & RESET_RST_CPU) {
				console_flush(vmm);
				if (vmm->marker_seen)
					finish_locked(vmm, 0, "the guest printed the marker and reset the machine");
				else
					finish_locked(vmm, 1, "the guest reset the machine without printing \"%s\"",
						      vmm->marker);
			}
		}
		return true;
	}
	return false;
}

static void handle_pio(struct vcpu *c)
{
	struct vmm *vmm = c->vmm;
	struct kvm_run *run = c->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool write = run->io.direction == KVM_EXIT_IO_OUT;
	uint32_t i, b;

	pthread_mutex_lock(&vmm->lock);
	for (i = 0; i < run->io.count; i++, data += run->io.size) {
		/*
		 * A 32-bit access to 0xcf8 is PCI's address register (no
		 * device here), not the reset register at 0xcf9.
		 */
		bool pci = run->io.size == 4 && run->io.port == 0xcf8;
		bool known = !pci;

		/*
		 * A wider access is split into bytes at consecutive ports,
		 * as the ISA bus does.
		 */
		for (b = 0; b < run->io.size; b++) {
			if (!pci && pio_byte(vmm, run->io.port + b, &data[b], write))
				continue;
			known = false;
			if (!write)
				data[b] = 0xff;
		}
		if (!known) {
			vmm->unknown_pio++;
			if (vmm->verbose)
				fprintf(stderr, "rkvm-vmm: vCPU %d: %s port 0x%x size %u: no device\n",
					c->id, write ? "out" : "in", run->io.port, run->io.size);
		}
	}
	pthread_mutex_unlock(&vmm->lock);
}

static void handle_mmio(struct vcpu *c)
{
	struct vmm *vmm = c->vmm;
	struct kvm_run *run = c->run;

	pthread_mutex_lock(&vmm->lock);
	if (!ioapic_mmio(vmm, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
			 run->mmio.is_write)) {
		vmm->unknown_mmio++;
		if (vmm->verbose)
			fprintf(stderr, "rkvm-vmm: vCPU %d: MMIO %s 0x%llx len %u: no device\n",
				c->id, run->mmio.is_write ? "write" : "read",
				(unsigned long long)run->mmio.phys_addr, run->mmio.len);
		if (!run->mmio.is_write)
			memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
	}
	pthread_mutex_unlock(&vmm->lock);
}

/* ---- vCPU threads ---- */

static const char *exit_reason_name(uint32_t reason)
{
	switch (reason) {
	case KVM_EXIT_UNKNOWN: return "KVM_EXIT_UNKNOWN";
	case KVM_EXIT_EXCEPTION: return "KVM_EXIT_EXCEPTION";
	case KVM_EXIT_HLT: return "KVM_EXIT_HLT";
	case KVM_EXIT_DEBUG: return "KVM_EXIT_DEBUG";
	case KVM_EXIT_SHUTDOWN: return "KVM_EXIT_SHUTDOWN";
	case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
	case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
	case KVM_EXIT_IOAPIC_EOI: return "KVM_EXIT_IOAPIC_EOI";
	case KVM_EXIT_SYSTEM_EVENT: return "KVM_EXIT_SYSTEM_EVENT";
	case KVM_EXIT_X86_RDMSR: return "KVM_EXIT_X86_RDMSR";
	case KVM_EXIT_X86_WRMSR: return "KVM_EXIT_X86_WRMSR";
	}
	return "an unknown exit";
}

/* One exit of vCPU @c that KVM_RUN returned to the VMM. */
static void handle_exit(struct vcpu *c)
{
	struct vmm *vmm = c->vmm;
	struct kvm_run *run = c->run;
	char data[256] = "";
	size_t n = 0;
	unsigned int i;

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_pio(c);
		break;
	case KVM_EXIT_MMIO:
		handle_mmio(c);
		break;
	case KVM_EXIT_INTR:
		break;
	case KVM_EXIT_SHUTDOWN:
		finish(vmm, 1, "vCPU %d: KVM_EXIT_SHUTDOWN (triple fault)", c->id);
		break;
	case KVM_EXIT_FAIL_ENTRY:
		finish(vmm, 1, "vCPU %d: KVM_EXIT_FAIL_ENTRY, reason 0x%llx on CPU %u", c->id,
		       (unsigned long long)run->fail_entry.hardware_entry_failure_reason,
		       run->fail_entry.cpu);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		for (i = 0; i < run->internal.ndata && i < 16 && n < sizeof(data); i++)
			n += snprintf(data + n, sizeof(data) - n, " 0x%llx",
				      (unsigned long long)run->internal.data[i]);
		finish(vmm, 1, "vCPU %d: KVM_EXIT_INTERNAL_ERROR, suberror %u, data:%s", c->id,
		       run->internal.suberror, data);
		break;
	case KVM_EXIT_SYSTEM_EVENT:
		finish(vmm, 1, "vCPU %d: KVM_EXIT_SYSTEM_EVENT type %u", c->id,
		       run->system_event.type);
		break;
	default:
		finish(vmm, 1, "vCPU %d: unexpected exit %u (%s)", c->id, run->exit_reason,
		       exit_reason_name(run->exit_reason));
		break;
	}
}

static bool run_over(struct vmm *vmm)
{
	bool done;

	pthread_mutex_lock(&vmm->lock);
	done = vmm->done;
	pthread_mutex_unlock(&vmm->lock);
	return done;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *c = arg;

	while (!run_over(c->vmm)) {
		if (ioctl(c->fd, KVM_RUN, 0) == 0) {
			handle_exit(c);
			continue;
		}
		/*
		 * EAGAIN: an AP that got INIT or SIPI while waiting
		 * (KVM_MP_STATE_UNINITIALIZED); EINTR: a signal, the end of
		 * the run (immediate_exit) or another.
		 */
		if (errno != EAGAIN && errno != EINTR) {
			finish(c->vmm, 1, "vCPU %d: KVM_RUN: %s", c->id, strerror(errno));
			break;
		}
	}
	return NULL;
}

static void sigusr1(int sig)
{
	(void)sig;
}

/*
 * The guest kernel's text symbol at or below @rip, from its System.map
 * ("ffffffff81000000 T _text" lines, sorted), into @buf.
 */
static void symbolize(const char *map, uint64_t rip, char *buf, size_t len)
{
	char line[256], name[200], type, best[200] = "";
	unsigned long long addr, at = 0;
	FILE *f;

	snprintf(buf, len, "%s", "");
	if (!map || !(f = fopen(map, "r")))
		return;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx %c %199s", &addr, &type, name) != 3 || addr > rip)
			continue;
		if (strchr("tTwW", type) && addr >= at) {
			at = addr;
			snprintf(best, sizeof(best), "%s", name);
		}
	}
	fclose(f);
	if (best[0])
		snprintf(buf, len, " (%s+0x%llx)", best, (unsigned long long)(rip - at));
}

/* Prints where vCPU @c is, once it has left KVM_RUN for good. */
static void vcpu_report(struct vcpu *c)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_mp_state mp;
	char sym[256];

	if (ioctl(c->fd, KVM_GET_REGS, &regs) < 0 || ioctl(c->fd, KVM_GET_SREGS, &sregs) < 0) {
		fprintf(stderr, "rkvm-vmm: vCPU %d: registers: %s\n", c->id, strerror(errno));
		return;
	}
	if (ioctl(c->fd, KVM_GET_MP_STATE, &mp) < 0)
		mp.mp_state = ~0u;
	symbolize(c->vmm->system_map, regs.rip, sym, sizeof(sym));
	fprintf(stderr, "rkvm-vmm: vCPU %d: mp_state %u rip 0x%llx%s rsp 0x%llx rflags 0x%llx "
		"cr0 0x%llx cr3 0x%llx cr4 0x%llx efer 0x%llx cs 0x%x\n", c->id, mp.mp_state,
		(unsigned long long)regs.rip, sym, (unsigned long long)regs.rsp,
		(unsigned long long)regs.rflags, (unsigned long long)sregs.cr0,
		(unsigned long long)sregs.cr3, (unsigned long long)sregs.cr4,
		(unsigned long long)sregs.efer, sregs.cs.selector);
}

/* ---- machine setup ---- */

static void vm_ioctl(struct vmm *vmm, unsigned long req, void *arg, const char *name)
{
	if (ioctl(vmm->vm_fd, req, arg) < 0)
		die("%s: %s", name, strerror(errno));
}

static void *read_file(const char *path, size_t *size)
{
	struct stat st;
	void *buf;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || fstat(fd, &st) < 0)
		die("%s: %s", path, strerror(errno));
	buf = malloc(st.st_size ? st.st_size : 1);
	if (!buf)
		die("%s: out of memory", path);
	if (read(fd, buf, st.st_size) != st.st_size)
		die("%s: short read", path);
	close(fd);
	*size = st.st_size;
	return buf;
}

static uint8_t checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	while (len--)
		sum += *b++;
	return -sum;
}

/*
 * The MultiProcessor Specification 1.4's tables: the floating pointer
 * and the configuration table after it, at MPTABLE_GPA (inside the
 * 0xf0000-0xfffff area the kernel scans).
 */
struct mpf {
	char signature[4];		/* "_MP_" */
	uint32_t config;
	uint8_t length;			/* in 16-byte units */
	uint8_t spec_rev;
	uint8_t checksum;
	uint8_t feature[5];
} __attribute__((packed));

struct mpc_header {
	char signature[4];		/* "PCMP" */
	uint16_t length;
	uint8_t spec_rev;
	uint8_t checksum;
	char oem[8];
	char product[12];
	uint32_t oem_table;
	uint16_t oem_size;
	uint16_t entries;
	uint32_t lapic;
	uint16_t ext_length;
	uint8_t ext_checksum;
	uint8_t reserved;
} __attribute__((packed));

struct mpc_cpu {
	uint8_t type;			/* 0 */
	uint8_t apic_id;
	uint8_t apic_ver;
	uint8_t flags;			/* bit 0 enabled, bit 1 bootstrap */
	uint32_t signature;
	uint32_t features;
	uint32_t reserved[2];
} __attribute__((packed));

struct mpc_bus {
	uint8_t type;			/* 1 */
	uint8_t id;
	char name[6];
} __attribute__((packed));

struct mpc_ioapic {
	uint8_t type;			/* 2 */
	uint8_t id;
	uint8_t ver;
	uint8_t flags;			/* bit 0 enabled */
	uint32_t addr;
} __attribute__((packed));

struct mpc_intsrc {
	uint8_t type;			/* 3 I/O, 4 local interrupt */
	uint8_t irq_type;		/* 0 INT, 1 NMI, 3 ExtINT */
	uint16_t flags;			/* 0: polarity and trigger of the bus */
	uint8_t bus;
	uint8_t bus_irq;
	uint8_t dst_apic;		/* 0xff: every local APIC */
	uint8_t dst_pin;
} __attribute__((packed));

static void build_mptable(struct vmm *vmm, const struct kvm_cpuid_entry2 *leaf1)
{
	size_t size = sizeof(struct mpf) + sizeof(struct mpc_header) +
		      vmm->ncpus * sizeof(struct mpc_cpu) + sizeof(struct mpc_bus) +
		      sizeof(struct mpc_ioapic) + 18 * sizeof(struct mpc_intsrc);
	uint8_t *base = gpa(vmm, MPTABLE_GPA, size);
	struct mpf *mpf = (struct mpf *)base;
	struct mpc_header *hdr = (struct mpc_header *)(mpf + 1);
	uint8_t *p = (uint8_t *)(hdr + 1);
	uint8_t ioapic_id = vmm->ncpus;
	int i, entries = 0;

	for (i = 0; i < vmm->ncpus; i++) {
		struct mpc_cpu *cpu = (struct mpc_cpu *)p;

		*cpu = (struct mpc_cpu){
			.type = 0, .apic_id = i, .apic_ver = APIC_VERSION,
			.flags = 1 | (i == 0 ? 2 : 0),
			.signature = leaf1 ? leaf1->eax : 0,
			.features = leaf1 ? leaf1->edx : 0,
		};
		p += sizeof(*cpu);
		entries++;
	}
	*(struct mpc_bus *)p = (struct mpc_bus){ .type = 1, .id = 0, .name = "ISA   " };
	p += sizeof(struct mpc_bus);
	entries++;
	*(struct mpc_ioapic *)p = (struct mpc_ioapic){
		.type = 2, .id = ioapic_id, .ver = IOAPIC_VERSION, .flags = 1, .addr = IOAPIC_GPA,
	};
	p += sizeof(struct mpc_ioapic);
	entries++;
	/* ISA IRQs 0-15 on IOAPIC pins 0-15, edge triggered, active high. */
	for (i = 0; i < 16; i++) {
		*(struct mpc_intsrc *)p = (struct mpc_intsrc){
			.type = 3, .irq_type = 0, .bus = 0, .bus_irq = i,
			.dst_apic = ioapic_id, .dst_pin = i,
		};
		p += sizeof(struct mpc_intsrc);
		entries++;
	}
	/* The local APICs' LINT0 (ExtINT, the PIC) and LINT1 (NMI). */
	for (i = 0; i < 2; i++) {
		*(struct mpc_intsrc *)p = (struct mpc_intsrc){
			.type = 4, .irq_type = i ? 1 : 3, .bus = 0, .bus_irq = 0,
			.dst_apic = 0xff, .dst_pin = i,
		};
		p += sizeof(struct mpc_intsrc);
		entries++;
	}

	*hdr = (struct mpc_header){
		.signature = "PCMP", .length = p - (uint8_t *)hdr, .spec_rev = 4,
		.oem = "RKVM    ", .product = "RKVM-VMM    ", .entries = entries,
		.lapic = APIC_GPA,
	};
	hdr->checksum = checksum(hdr, hdr->length);
	*mpf = (struct mpf){
		.signature = "_MP_", .config = MPTABLE_GPA + sizeof(*mpf), .length = 1,
		.spec_rev = 4,
	};
	mpf->checksum = checksum(mpf, sizeof(*mpf));
}

static struct kvm_cpuid2 *supported_cpuid(struct vmm *vmm)
{
	int n = 64;

	for (;;) {
		struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + n * sizeof(cpuid->entries[0]));

		if (!cpuid)
			die("out of memory");
		cpuid->nent = n;
		if (ioctl(vmm->sys_fd, KVM_GET_SUPPORTED_CPUID, cpuid) == 0)
			return cpuid;
		if (errno != E2BIG || n >= 4096)
			die("KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
		free(cpuid);
		n *= 2;
	}
}

static struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *cpuid, uint32_t fn, uint32_t index)
{
	uint32_t i;

	for (i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];

		if (e->function == fn &&
		    (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == index))
			return e;
	}
	return NULL;
}

static int order(int n)
{
	int shift = 0;

	while ((1 << shift) < n)
		shift++;
	return shift;
}

/*
 * Replaces a topology leaf (0xb or 0x1f) with one package of @ncpus cores
 * of one thread each, as seen by the CPU with x2APIC ID @apic_id.
 */
static void cpuid_set_topology(struct kvm_cpuid2 *cpuid, uint32_t fn, int ncpus, int apic_id)
{
	uint32_t i, j;

	for (i = j = 0; i < cpuid->nent; i++)
		if (cpuid->entries[i].function != fn)
			cpuid->entries[j++] = cpuid->entries[i];
	cpuid->nent = j;
	for (i = 0; i < 3; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[cpuid->nent++];

		*e = (struct kvm_cpuid_entry2){
			.function = fn, .index = i, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
			.edx = apic_id,
		};
		if (i == 0) {		/* SMT level: one thread per core */
			e->eax = 0;
			e->ebx = 1;
			e->ecx = 1 << 8 | i;
		} else if (i == 1) {	/* core level: the whole package */
			e->eax = order(ncpus);
			e->ebx = ncpus;
			e->ecx = 2 << 8 | i;
		} else {		/* invalid level: the end of the list */
			e->ecx = i;
		}
	}
}

/* The CPUID of vCPU @id: the supported one with its APIC ID and topology. */
static struct kvm_cpuid2 *vcpu_cpuid(struct vmm *vmm, const struct kvm_cpuid2 *sup, int id)
{
	size_t size = sizeof(*sup) + (sup->nent + 8) * sizeof(sup->entries[0]);
	struct kvm_cpuid2 *cpuid = malloc(size);
	struct kvm_cpuid_entry2 *e;
	uint32_t max_basic;
	bool amd;

	if (!cpuid)
		die("out of memory");
	memcpy(cpuid, sup, sizeof(*sup) + sup->nent * sizeof(sup->entries[0]));
	e = cpuid_find(cpuid, 0, 0);
	if (!e)
		die("KVM_GET_SUPPORTED_CPUID has no leaf 0");
	max_basic = e->eax;
	amd = e->ebx == 0x68747541 && e->ecx == 0x444d4163 && e->edx == 0x69746e65;

	e = cpuid_find(cpuid, 1, 0);
	if (!e)
		die("KVM_GET_SUPPORTED_CPUID has no leaf 1");
	/* The initial APIC ID, and the logical processors of the package. */
	e->ebx = (e->ebx & 0xffff) | id << 24 | (1 << order(vmm->ncpus)) << 16;
	if (vmm->ncpus > 1)
		e->edx |= 1u << 28;	/* HTT: that count is valid */
	if (max_basic >= 0xb)
		cpuid_set_topology(cpuid, 0xb, vmm->ncpus, id);
	if (max_basic >= 0x1f)
		cpuid_set_topology(cpuid, 0x1f, vmm->ncpus, id);
	if (amd) {
		e = cpuid_find(cpuid, 0x80000008, 0);
		if (e)	/* cores per package - 1, and the APIC ID bits for them */
			e->ecx = (e->ecx & ~0xf0ffu) | order(vmm->ncpus) << 12 | (vmm->ncpus - 1);
		e = cpuid_find(cpuid, 0x8000001e, 0);
		if (e) {	/* extended APIC ID, core ID (one thread each), node 0 */
			e->eax = id;
			e->ebx = id;
			e->ecx = 0;
		}
	}
	return cpuid;
}

static void setup_vcpu(struct vmm *vmm, int id, const struct kvm_cpuid2 *sup, int mmap_size)
{
	struct vcpu *c = &vmm->cpu[id];
	struct kvm_cpuid2 *cpuid;

	c->vmm = vmm;
	c->id = id;
	c->fd = ioctl(vmm->vm_fd, KVM_CREATE_VCPU, id);
	if (c->fd < 0)
		die("KVM_CREATE_VCPU %d: %s", id, strerror(errno));
	c->run = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
	if (c->run == MAP_FAILED)
		die("mmap of vCPU %d's kvm_run: %s", id, strerror(errno));
	cpuid = vcpu_cpuid(vmm, sup, id);
	if (ioctl(c->fd, KVM_SET_CPUID2, cpuid) < 0)
		die("KVM_SET_CPUID2 on vCPU %d: %s", id, strerror(errno));
	free(cpuid);
}

/* The BSP enters the kernel at startup_64 with RSI = boot_params. */
static void setup_bsp(struct vmm *vmm)
{
	struct vcpu *c = &vmm->cpu[0];
	uint64_t *gdt = gpa(vmm, GDT_GPA, 4 * 8);
	uint64_t *pml4 = gpa(vmm, PML4_GPA, 6 * 4096);
	uint64_t *pdpt = pml4 + 512, *pd = pml4 + 1024;
	struct kvm_segment code = {
		.base = 0, .limit = 0xffffffff, .selector = BOOT_CS, .type = 0xb,
		.present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1,
	};
	struct kvm_segment data = {
		.base = 0, .limit = 0xffffffff, .selector = BOOT_DS, .type = 0x3,
		.present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
	};
	struct kvm_sregs sregs;
	struct kvm_regs regs = {
		.rip = KERNEL_GPA + 0x200, .rsi = BOOT_PARAMS_GPA, .rsp = BOOT_PARAMS_GPA,
		.rflags = 2,
	};
	int i;

	/* Null, unused, __BOOT_CS (64-bit code), __BOOT_DS (flat data). */
	gdt[0] = 0;
	gdt[1] = 0;
	gdt[2] = 0x00af9b000000ffffull;
	gdt[3] = 0x00cf93000000ffffull;
	/* 0..4 GiB identity-mapped with 2 MiB pages. */
	memset(pml4, 0, 6 * 4096);
	pml4[0] = (PML4_GPA + 0x1000) | PTE_P | PTE_RW;
	for (i = 0; i < 4; i++)
		pdpt[i] = (PML4_GPA + 0x2000 + i * 0x1000) | PTE_P | PTE_RW;
	for (i = 0; i < 4 * 512; i++)
		pd[i] = ((uint64_t)i << 21) | PTE_P | PTE_RW | PTE_PS;

	if (ioctl(c->fd, KVM_GET_SREGS, &sregs) < 0)
		die("KVM_GET_SREGS: %s", strerror(errno));
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.gdt.base = GDT_GPA;
	sregs.gdt.limit = 4 * 8 - 1;
	sregs.cr0 = X86_CR0_PE | X86_CR0_MP | X86_CR0_ET | X86_CR0_NE | X86_CR0_WP | X86_CR0_PG;
	sregs.cr3 = PML4_GPA;
	sregs.cr4 = X86_CR4_PAE;
	sregs.efer = EFER_LME | EFER_LMA;
	if (ioctl(c->fd, KVM_SET_SREGS, &sregs) < 0)
		die("KVM_SET_SREGS: %s", strerror(errno));
	if (ioctl(c->fd, KVM_SET_REGS, &regs) < 0)
		die("KVM_SET_REGS: %s", strerror(errno));
}

static void e820_add(struct boot_params *bp, uint64_t addr, uint64_t size, uint32_t type)
{
	struct boot_e820_entry *e = &bp->e820_table[bp->e820_entries++];

	e->addr = addr;
	e->size = size;
	e->type = type;
}

/* Loads the bzImage and initrd and writes the zero page. */
static void load_linux(struct vmm *vmm, const char *kernel, const char *initrd,
		       const char *cmdline)
{
	struct boot_params *bp = gpa(vmm, BOOT_PARAMS_GPA, sizeof(*bp));
	size_t size, setup_size, hdr_end, initrd_size = 0;
	uint8_t *image = read_file(kernel, &size);
	struct setup_header *hdr;
	uint64_t initrd_gpa = 0, kernel_end;
	char *cmd;

	if (size < 0x250)
		die("%s: too small for a bzImage", kernel);
	hdr = (struct setup_header *)(image + 0x1f1);
	if (hdr->boot_flag != 0xaa55 || hdr->header != 0x53726448)	/* "HdrS" */
		die("%s: no Linux boot protocol header", kernel);
	if (hdr->version < 0x20c || !(hdr->xloadflags & XLF_KERNEL_64))
		die("%s: boot protocol %x.%02x without the 64-bit entry", kernel,
		    hdr->version >> 8, hdr->version & 0xff);
	setup_size = ((hdr->setup_sects ? hdr->setup_sects : 4) + 1) * 512;
	if (setup_size >= size)
		die("%s: truncated", kernel);
	memcpy(gpa(vmm, KERNEL_GPA, size - setup_size), image + setup_size, size - setup_size);

	/*
	 * The kernel decompresses itself to pref_address (not relocatable)
	 * and needs init_size from there; the initrd goes above that, at
	 * the top of RAM.
	 */
	kernel_end = (hdr->pref_address > KERNEL_GPA ? hdr->pref_address : KERNEL_GPA) +
		     hdr->init_size;
	if (initrd) {
		uint8_t *buf = read_file(initrd, &initrd_size);
		uint64_t top = vmm->mem_size;

		if (top > (uint64_t)hdr->initrd_addr_max + 1)
			top = (uint64_t)hdr->initrd_addr_max + 1;
		initrd_gpa = (top - initrd_size) & ~0xfffull;
		if (initrd_size > top || initrd_gpa < kernel_end)
			die("%s (%zu bytes) does not fit in RAM above the kernel (up to 0x%" PRIx64 ")",
			    initrd, initrd_size, kernel_end);
		memcpy(gpa(vmm, initrd_gpa, initrd_size), buf, initrd_size);
		free(buf);
	} else if (kernel_end > vmm->mem_size) {
		die("%s needs RAM up to 0x%" PRIx64, kernel, kernel_end);
	}

	memset(bp, 0, sizeof(*bp));
	/* The setup header as the image has it, up to its end (jump's target). */
	hdr_end = 0x202 + image[0x201];
	memcpy((uint8_t *)bp + 0x1f1, image + 0x1f1, hdr_end - 0x1f1);
	bp->hdr.type_of_loader = 0xff;		/* undefined loader */
	bp->hdr.loadflags |= CAN_USE_HEAP;
	bp->hdr.heap_end_ptr = 0xfe00 - 0x200;
	bp->hdr.code32_start = KERNEL_GPA;
	bp->hdr.ramdisk_image = initrd_gpa;
	bp->hdr.ramdisk_size = initrd_size;
	cmd = gpa(vmm, CMDLINE_GPA, CMDLINE_MAX);
	if (snprintf(cmd, CMDLINE_MAX, "tsc_early_khz=%u tsc=reliable acpi=off pci=off reboot=pci %s",
		     vmm->tsc_khz, cmdline) >= CMDLINE_MAX ||
	    strlen(cmd) >= hdr->cmdline_size)
		die("the command line is too long");
	bp->hdr.cmd_line_ptr = CMDLINE_GPA;

	e820_add(bp, 0, EBDA_GPA, E820_RAM);
	e820_add(bp, EBDA_GPA, 0x100000 - EBDA_GPA, E820_RESERVED);
	e820_add(bp, 0x100000, vmm->mem_size - 0x100000, E820_RAM);
	free(image);
	if (vmm->verbose)
		fprintf(stderr, "rkvm-vmm: kernel %zu bytes at 0x%x, initrd %zu bytes at 0x%" PRIx64
			", command line: %s\n", size - setup_size, KERNEL_GPA, initrd_size,
			initrd_gpa, cmd);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: rkvm-vmm [--dev /dev/rkvm] --kernel bzImage [--initrd cpio.gz]\n"
		"                [--cmdline \"...\"] [--cpus N] [--mem MiB] [--timeout S]\n"
		"                [--marker TEXT] [--system-map FILE] [--verbose]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dev", required_argument, NULL, 'd' },
		{ "kernel", required_argument, NULL, 'k' },
		{ "initrd", required_argument, NULL, 'i' },
		{ "cmdline", required_argument, NULL, 'c' },
		{ "cpus", required_argument, NULL, 'n' },
		{ "mem", required_argument, NULL, 'm' },
		{ "timeout", required_argument, NULL, 't' },
		{ "marker", required_argument, NULL, 'M' },
		{ "system-map", required_argument, NULL, 's' },
		{ "verbose", no_argument, NULL, 'v' },
		{ }
	};
	static struct vmm vm = {
		.dev = "/dev/rkvm", .ncpus = 1, .marker = "rkvm-guest: hello",
	};
	struct vmm *vmm = &vm;
	const char *kernel = NULL, *initrd = NULL, *cmdline = "console=ttyS0";
	unsigned long mem_mib = 256, timeout = 300;
	struct kvm_enable_cap split = { .cap = KVM_CAP_SPLIT_IRQCHIP, .args = { IOAPIC_PINS } };
	struct kvm_userspace_memory_region region;
	struct kvm_cpuid2 *sup;
	pthread_condattr_t cattr;
	struct timespec deadline;
	struct sigaction sa = { .sa_handler = sigusr1 };
	uint64_t identity = IDENTITY_MAP_GPA;
	int opt, i, mmap_size, rc;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'd': vmm->dev = optarg; break;
		case 'k': kernel = optarg; break;
		case 'i': initrd = optarg; break;
		case 'c': cmdline = optarg; break;
		case 'n': vmm->ncpus = atoi(optarg); break;
		case 'm': mem_mib = strtoul(optarg, NULL, 0); break;
		case 't': timeout = strtoul(optarg, NULL, 0); break;
		case 'M': vmm->marker = optarg; break;
		case 's': vmm->system_map = optarg; break;
		case 'v': vmm->verbose = true; break;
		default: usage();
		}
	}
	if (!kernel || optind != argc)
		usage();
	if (vmm->ncpus < 1 || vmm->ncpus > MAX_CPUS)
		die("--cpus must be 1 to %d", MAX_CPUS);
	if (mem_mib < 64 || mem_mib > MAX_MEM_MIB)
		die("--mem must be 64 to %d MiB", MAX_MEM_MIB);
	vmm->mem_size = (uint64_t)mem_mib << 20;
	clock_gettime(CLOCK_MONOTONIC, &vmm->t0);

	vmm->sys_fd = open(vmm->dev, O_RDWR | O_CLOEXEC);
	if (vmm->sys_fd < 0)
		die("%s: %s", vmm->dev, strerror(errno));
	if (ioctl(vmm->sys_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
		die("%s: KVM API version is not %d", vmm->dev, KVM_API_VERSION);
	mmap_size = ioctl(vmm->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size < (int)sizeof(struct kvm_run))
		die("KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
	vmm->vm_fd = ioctl(vmm->sys_fd, KVM_CREATE_VM, 0);
	if (vmm->vm_fd < 0)
		die("KVM_CREATE_VM: %s", strerror(errno));
	vm_ioctl(vmm, KVM_SET_IDENTITY_MAP_ADDR, &identity, "KVM_SET_IDENTITY_MAP_ADDR");
	if (ioctl(vmm->vm_fd, KVM_SET_TSS_ADDR, TSS_GPA) < 0)
		die("KVM_SET_TSS_ADDR: %s", strerror(errno));
	vm_ioctl(vmm, KVM_ENABLE_CAP, &split, "KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)");

	vmm->mem = mmap(NULL, vmm->mem_size, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (vmm->mem == MAP_FAILED)
		die("guest memory: %s", strerror(errno));
	region = (struct kvm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = 0, .memory_size = vmm->mem_size,
		.userspace_addr = (uintptr_t)vmm->mem,
	};
	vm_ioctl(vmm, KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION");

	sup = supported_cpuid(vmm);
	for (i = 0; i < vmm->ncpus; i++)
		setup_vcpu(vmm, i, sup, mmap_size);
	rc = ioctl(vmm->cpu[0].fd, KVM_GET_TSC_KHZ, 0);
	if (rc <= 0)
		die("KVM_GET_TSC_KHZ: %s", rc < 0 ? strerror(errno) : "0 kHz");
	vmm->tsc_khz = rc;
	build_mptable(vmm, cpuid_find(sup, 1, 0));
	free(sup);
	load_linux(vmm, kernel, initrd, cmdline);
	setup_bsp(vmm);
	/* Every IOAPIC pin starts masked, as after reset. */
	for (i = 0; i < IOAPIC_PINS; i++)
		vmm->ioapic.rte[i] = RTE_MASKED;
	vmm->ioapic.id = vmm->ncpus;

	pthread_mutex_init(&vmm->lock, NULL);
	pthread_condattr_init(&cattr);
	pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
	pthread_cond_init(&vmm->done_cond, &cattr);
	/* SIGUSR1 ends a vCPU's KVM_RUN (no SA_RESTART: it returns EINTR). */
	sigaction(SIGUSR1, &sa, NULL);
	fprintf(stderr, "rkvm-vmm: %s, %d vCPUs, %lu MiB, TSC %u kHz\n", vmm->dev, vmm->ncpus,
		mem_mib, vmm->tsc_khz);
	for (i = 0; i < vmm->ncpus; i++)
		if (pthread_create(&vmm->cpu[i].thread, NULL, vcpu_thread, &vmm->cpu[i]))
			die("pthread_create failed");

	deadline = vmm->t0;
	deadline.tv_sec += timeout;
	pthread_mutex_lock(&vmm->lock);
	while (!vmm->done) {
		if (pthread_cond_timedwait(&vmm->done_cond, &vmm->lock, &deadline) == ETIMEDOUT) {
			finish_locked(vmm, 1, "timeout");
			break;
		}
	}
	console_flush(vmm);
	pthread_mutex_unlock(&vmm->lock);

	/* Stop every vCPU: immediate_exit for the next KVM_RUN, a signal for this one. */
	for (i = 0; i < vmm->ncpus; i++) {
		vmm->cpu[i].run->immediate_exit = 1;
		pthread_kill(vmm->cpu[i].thread, SIGUSR1);
	}
	for (i = 0; i < vmm->ncpus; i++)
		pthread_join(vmm->cpu[i].thread, NULL);
	if (vmm->status || vmm->verbose)
		for (i = 0; i < vmm->ncpus; i++)
			vcpu_report(&vmm->cpu[i]);
	fprintf(stderr, "rkvm-vmm: %s after %.1f s (%lu port and %lu MMIO accesses without a device)\n",
		vmm->why, elapsed(vmm), vmm->unknown_pio, vmm->unknown_mmio);
	return vmm->status;
}
