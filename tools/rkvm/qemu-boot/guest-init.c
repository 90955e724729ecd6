// SPDX-License-Identifier: GPL-2.0
/*
 * /init of the tiny guest that QEMU boots inside the emulated test host
 * (tools/rkvm/qemu-boot/run). It has no shell and no libraries: it prints
 * one marker line with the number of CPUs the guest kernel brought up and
 * the kernel's uptime, then leaves the machine. QEMU runs with -no-reboot,
 * so a reset request ends it as well as a power-off.
 *
 * rkvm_guest.exit=poweroff (default) asks for a power-off (ACPI S5 on the
 * pc machine); rkvm_guest.exit=reboot asks for a reset, for machines
 * without a power-off device (microvm without ACPI).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <unistd.h>

static int online_cpus(void)
{
	cpu_set_t set;

	/* init's affinity is every online CPU; it needs no /sys. */
	if (sched_getaffinity(0, sizeof(set), &set))
		return -1;
	return CPU_COUNT(&set);
}

static void read_file(const char *path, char *buf, size_t len)
{
	ssize_t n = -1;
	int fd = open(path, O_RDONLY);

	buf[0] = '\0';
	if (fd >= 0) {
		n = read(fd, buf, len - 1);
		close(fd);
	}
	buf[n > 0 ? n : 0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
}

int main(void)
{
	char cmdline[1024], uptime[64];
	int how = RB_POWER_OFF;

	if (mount("proc", "/proc", "proc", 0, NULL) == 0) {
		read_file("/proc/cmdline", cmdline, sizeof(cmdline));
		read_file("/proc/uptime", uptime, sizeof(uptime));
		if (strstr(cmdline, "rkvm_guest.exit=reboot"))
			how = RB_AUTOBOOT;
	} else {
		strcpy(uptime, "?");
	}
	uptime[strcspn(uptime, " ")] = '\0';
	/*
	 * Kernel messages still queued for the console (a boot without
	 * "quiet") would land inside the marker line: only emergencies
	 * from now on.
	 */
	klogctl(8 /* SYSLOG_ACTION_CONSOLE_LEVEL */, NULL, 1);
	printf("rkvm-guest: hello, %d CPUs, up %s s\n", online_cpus(), uptime);
	fflush(stdout);
	sync();
	reboot(how);
	/* Only reached if the kernel refused. */
	perror("rkvm-guest: reboot");
	return 1;
}
