/*
 * rblab blind clock: an LD_PRELOAD library (through a lab host's /etc/ld.so.preload) that
 * subtracts one shared offset from every clock a process of that host reads, so the lab can
 * pause the host the way a hypervisor stops and continues a KVM guest with kvm-clock: after
 * the pause no clock inside shows the gap (QEMU saves and restores kvmclock at stop/cont).
 * The lab's usual hang (SIGSTOP of every process) lets the clocks run on, so Heartbeat and the
 * watchdog see the pause there and would not on such a guest (lab/blindclock.py).
 *
 * The offset (int64 nanoseconds) is the first 8 bytes of /run/rblab-blind-offset (or of the
 * file RBLAB_BLIND_OFFSET names, for its tests), mapped shared: the lab raises it while every process of the host is stopped. No file when a process
 * starts: offset 0 for its life.
 *
 * Shifted: CLOCK_REALTIME, MONOTONIC, BOOTTIME and their variants (one offset for all, as on
 * the guest), times(2)'s return value (Heartbeat's clock), gettimeofday, time. Not shifted:
 * CPU-time clocks. Absolute deadlines a process computes from a shifted clock are shifted back
 * before the kernel sees them (clock_nanosleep, semaphores, condition variables, mutexes,
 * timerfds): Python's sleep and lock timeouts, and its GIL, wait on such deadlines.
 * Not covered: /proc/uptime (the lab bind-mounts a file kept by a shifted ticker over it),
 * kernel timers running during the pause (a wait ends at once after the resume, as in the
 * lab's usual hang), timer_settime.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/times.h>
#include <time.h>
#include <unistd.h>

#define OFFSET_FILE "/run/rblab-blind-offset"
#define NS 1000000000LL

static volatile const int64_t *offset_ns;
static int mapped;

static void map_offset(void)
{
	if (__atomic_exchange_n(&mapped, 1, __ATOMIC_ACQ_REL))
		return;
	const char *path = getenv("RBLAB_BLIND_OFFSET");
	int fd = open(path && *path ? path : OFFSET_FILE, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	void *p = mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (p != MAP_FAILED)
		offset_ns = p;
}

__attribute__((constructor)) static void blindclock_init(void)
{
	map_offset();
}

static int64_t offset(void)
{
	if (!mapped)
		map_offset();
	return offset_ns ? *offset_ns : 0;
}

static void *next(const char *name)
{
	return dlsym(RTLD_NEXT, name);
}

/* `real`, in a wrapper: the definition of `fn` it hides (libc's), looked up on first use */
#define REAL(fn, lookup)                 \
	static __typeof__(fn) *real;     \
	if (!real)                       \
		real = (lookup)
#define NEXT(fn) REAL(fn, next(#fn))

static int shifted(clockid_t clk)
{
	switch (clk) {
	case CLOCK_REALTIME:
	case CLOCK_MONOTONIC:
	case CLOCK_MONOTONIC_RAW:
	case CLOCK_REALTIME_COARSE:
	case CLOCK_MONOTONIC_COARSE:
	case CLOCK_BOOTTIME:
	case CLOCK_REALTIME_ALARM:
	case CLOCK_BOOTTIME_ALARM:
	case CLOCK_TAI:
		return 1;
	default:
		return 0;
	}
}

static void add_ns(struct timespec *ts, int64_t ns)
{
	int64_t t = (int64_t)ts->tv_sec * NS + ts->tv_nsec + ns;
	ts->tv_sec = (time_t)(t / NS);
	ts->tv_nsec = (long)(t % NS);
	if (ts->tv_nsec < 0) {
		ts->tv_nsec += NS;
		ts->tv_sec -= 1;
	}
}

/* an absolute deadline on a shifted clock, as the kernel's clock has it */
static const struct timespec *real_deadline(const struct timespec *at, struct timespec *buf)
{
	int64_t off = offset();
	if (!at || !off)
		return at;
	*buf = *at;
	add_ns(buf, off);
	return buf;
}

/* the same for a deadline on clock `clk`: unchanged unless that clock is shifted */
static const struct timespec *clock_deadline(clockid_t clk, const struct timespec *at,
					     struct timespec *buf)
{
	return shifted(clk) ? real_deadline(at, buf) : at;
}

int clock_gettime(clockid_t clk, struct timespec *ts)
{
	NEXT(clock_gettime);
	int r = real(clk, ts);
	if (r == 0 && shifted(clk)) {
		int64_t off = offset();
		if (off)
			add_ns(ts, -off);
	}
	return r;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
	(void)tz;
	struct timespec ts;
	int r = clock_gettime(CLOCK_REALTIME, &ts);
	if (r == 0) {
		tv->tv_sec = ts.tv_sec;
		tv->tv_usec = ts.tv_nsec / 1000;
	}
	return r;
}

time_t time(time_t *out)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return (time_t)-1;
	if (out)
		*out = ts.tv_sec;
	return ts.tv_sec;
}

clock_t times(struct tms *buf)
{
	static long hz;
	NEXT(times);
	if (!hz)
		hz = sysconf(_SC_CLK_TCK);
	clock_t r = real(buf);
	int64_t off = offset();
	if (r != (clock_t)-1 && off)
		r -= (clock_t)(off / (NS / hz));
	return r;
}

int clock_nanosleep(clockid_t clk, int flags, const struct timespec *req, struct timespec *rem)
{
	NEXT(clock_nanosleep);
	struct timespec buf;
	if (flags & TIMER_ABSTIME)
		req = clock_deadline(clk, req, &buf);
	return real(clk, flags, req, rem);
}

int sem_clockwait(sem_t *sem, clockid_t clk, const struct timespec *at)
{
	NEXT(sem_clockwait);
	struct timespec buf;
	return real(sem, clk, clock_deadline(clk, at, &buf));
}

int sem_timedwait(sem_t *restrict sem, const struct timespec *restrict at)
{
	NEXT(sem_timedwait);
	struct timespec buf;
	return real(sem, real_deadline(at, &buf));
}

/* a condition variable's clock is REALTIME or MONOTONIC: both carry the same offset */
int pthread_cond_timedwait(pthread_cond_t *restrict c, pthread_mutex_t *restrict m,
			   const struct timespec *restrict at)
{
	REAL(pthread_cond_timedwait, dlvsym(RTLD_NEXT, "pthread_cond_timedwait", "GLIBC_2.3.2"));
	struct timespec buf;
	return real(c, m, real_deadline(at, &buf));
}

int pthread_cond_clockwait(pthread_cond_t *restrict c, pthread_mutex_t *restrict m,
			   clockid_t clk, const struct timespec *restrict at)
{
	NEXT(pthread_cond_clockwait);
	struct timespec buf;
	return real(c, m, clk, clock_deadline(clk, at, &buf));
}

int pthread_mutex_timedlock(pthread_mutex_t *restrict m, const struct timespec *restrict at)
{
	NEXT(pthread_mutex_timedlock);
	struct timespec buf;
	return real(m, real_deadline(at, &buf));
}

int pthread_mutex_clocklock(pthread_mutex_t *restrict m, clockid_t clk,
			    const struct timespec *restrict at)
{
	NEXT(pthread_mutex_clocklock);
	struct timespec buf;
	return real(m, clk, clock_deadline(clk, at, &buf));
}

int timerfd_settime(int fd, int flags, const struct itimerspec *new, struct itimerspec *old)
{
	NEXT(timerfd_settime);
	struct itimerspec buf;
	struct timespec at;
	/* an it_value of 0 disarms the timer: no deadline to shift */
	if ((flags & TFD_TIMER_ABSTIME) && new && (new->it_value.tv_sec || new->it_value.tv_nsec)) {
		buf = *new;
		buf.it_value = *real_deadline(&new->it_value, &at);
		new = &buf;
	}
	return real(fd, flags, new, old);
}
