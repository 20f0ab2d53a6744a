// Host-stream harness for the Verilated TPU, loaded by tinytpu_hdl/runtime/verilator.py with
// ctypes. One call moves a whole command packet in and its whole response packet out, so
// Python is crossed once per host command, not once per cycle.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include "Vtinytpu.h"
#include "Vtinytpu___024root.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_vcd_c.h"
#endif

// Verilator spells the "__" of Amaranth's port names as "___05F".
#define CMD_VALID host_cmd___05Fvalid
#define CMD_READY host_cmd___05Fready
#define CMD_PAYLOAD host_cmd___05Fpayload
#define RESP_VALID host_resp___05Fvalid
#define RESP_READY host_resp___05Fready
#define RESP_PAYLOAD host_resp___05Fpayload

struct Harness {
    std::unique_ptr<VerilatedContext> context;
    std::unique_ptr<Vtinytpu> top;
    uint64_t cycles = 0;
    int item_words[4] = {1, 1, 4, 1};
#if VM_TRACE
    std::unique_ptr<VerilatedVcdC> trace;
    uint64_t time = 0;
#endif
};

// One half cycle: the clock at `level`, the model evaluated, the trace (if any) dumped.
static void half(Harness *h, int level) {
    h->top->clk = level;
    h->top->eval();
#if VM_TRACE
    if (h->trace) h->trace->dump(h->time);
    h->time += 5;
#endif
}

// One eval() per cycle where the model lets it: Verilator 5 finds a rising edge by
// comparing the clock with the value it saw at the previous eval(), so setting that value
// low makes the next eval() with the clock high one posedge; inputs set before it settle
// first (its input phase), outputs are read after it. 2 to 3 % faster than two half
// cycles at N = 8 (docs/benchmarks.md). Waveform builds keep two evals per cycle (the
// trace shows the clock low).
#define CLK_PREV __Vtrigprevexpr___TOP__clk__0
template <typename R, typename = void> struct has_clk_prev : std::false_type {};
template <typename R>
struct has_clk_prev<R, std::void_t<decltype(std::declval<R &>().CLK_PREV)>> : std::true_type {};

template <typename Root> static bool posedge_only(Root *root) {
#if VM_TRACE
    (void)root;
    return false;
#else
    if constexpr (has_clk_prev<Root>::value) {
        root->CLK_PREV = 0;
        return true;
    } else {
        (void)root;
        return false;
    }
#endif
}

static void tick(Harness *h) {
    if (posedge_only(h->top->rootp)) {
        h->top->clk = 1;
        h->top->eval();
        h->top->clk = 0;
    } else {
        half(h, 0);
        half(h, 1);
    }
    h->cycles++;
}

// The simulation backdoor: rows of the unified buffer and the accumulators copied between
// host words (lane 0 in the lowest bits, as the host protocol packs them) and the model's
// memory arrays, with no clock cycle. Built only when the model has the arrays under one of
// the names below (checked at compile time); otherwise tpu_backdoor answers -1.
// The buffer: one array (``ub.mem``), or with TPUConfig.overlap_units two BlockRAM copies
// (``ub.mem.mem`` and ``ub.copy.mem``, the second holding the lower rows, which a write also
// reaches). The
// accumulators: one array (``acc.mem``), or a BlockRAM per read port
// (``acc.copy0.mem``, ``acc.copy1.mem``), every copy written.
#define HAS_MEMBER(TRAIT, MEMBER)                                                        \
    template <typename R, typename = void> struct TRAIT : std::false_type {};             \
    template <typename R>                                                                 \
    struct TRAIT<R, std::void_t<decltype(std::declval<R &>().MEMBER)>> : std::true_type {};
HAS_MEMBER(has_ub_plain, tinytpu__DOT__ub__DOT__mem)
HAS_MEMBER(has_ub_ram, tinytpu__DOT__ub__DOT__mem__DOT__mem)
HAS_MEMBER(has_ub_copy, tinytpu__DOT__ub__DOT__copy__DOT__mem)
HAS_MEMBER(has_acc_plain, tinytpu__DOT__acc__DOT__mem)
HAS_MEMBER(has_acc_ram0, tinytpu__DOT__acc__DOT__copy0__DOT__mem)
HAS_MEMBER(has_acc_ram1, tinytpu__DOT__acc__DOT__copy1__DOT__mem)

template <typename Row> static void copy_row(Row &row, uint32_t *words, int n, bool write) {
    if constexpr (std::is_integral_v<Row>) {
        if (write) {
            uint64_t value = 0;
            for (int i = 0; i < n && i < 2; i++) value |= (uint64_t)words[i] << (32 * i);
            row = (Row)value;
        } else {
            for (int i = 0; i < n; i++) words[i] = i < 2 ? (uint32_t)((uint64_t)row >> (32 * i)) : 0;
        }
    } else {
        for (int i = 0; i < n; i++) {
            if (write) row[i] = words[i];
            else words[i] = row[i];
        }
    }
}

// Rows of `mem` from `addr` (those below its depth, for a partial copy).
template <typename Mem> static void copy_rows(Mem &mem, int64_t addr, int64_t count,
                                              uint32_t *words, int n, bool write) {
    int64_t depth = (int64_t)mem.size();
    int64_t rows = addr >= depth ? 0 : std::min(count, depth - addr);
    for (int64_t r = 0; r < rows; r++) copy_row(mem[addr + r], words + r * n, n, write);
}

template <typename Root> static int backdoor(Root *root, int space, int64_t addr, int64_t count,
                                             uint32_t *words, int n, bool write) {
    constexpr bool ub_plain = has_ub_plain<Root>::value, ub_ram = has_ub_ram<Root>::value;
    constexpr bool acc_plain = has_acc_plain<Root>::value, acc_ram = has_acc_ram0<Root>::value;
    if constexpr ((ub_plain || ub_ram) && (acc_plain || acc_ram)) {
        if (space == 0) {
            if constexpr (ub_ram) copy_rows(root->tinytpu__DOT__ub__DOT__mem__DOT__mem, addr,
                                            count, words, n, write);
            else copy_rows(root->tinytpu__DOT__ub__DOT__mem, addr, count, words, n, write);
            if constexpr (has_ub_copy<Root>::value) {
                if (write) copy_rows(root->tinytpu__DOT__ub__DOT__copy__DOT__mem, addr, count,
                                     words, n, true);
            }
        } else {
            if constexpr (acc_ram) {
                copy_rows(root->tinytpu__DOT__acc__DOT__copy0__DOT__mem, addr, count, words, n,
                          write);
                if constexpr (has_acc_ram1<Root>::value) {
                    if (write) copy_rows(root->tinytpu__DOT__acc__DOT__copy1__DOT__mem, addr,
                                         count, words, n, true);
                }
            } else {
                copy_rows(root->tinytpu__DOT__acc__DOT__mem, addr, count, words, n, write);
            }
        }
        return 0;
    } else {
        (void)root; (void)space; (void)addr; (void)count; (void)words; (void)n; (void)write;
        return -1;
    }
}

extern "C" {

// Copy `count` rows of space 0 (UB) or 1 (ACC) from `addr` in (write = 1) or out; the
// caller checks the range. Returns 0, or -1 when the model has no backdoor.
int tpu_backdoor(Harness *h, int space, int64_t addr, int64_t count, uint32_t *words,
                 int write) {
    if (space != 0 && space != 1) return -1;
    return backdoor(h->top->rootp, space, addr, count, words, h->item_words[space], write != 0);
}

// seed >= 0: registers and memories without a reset start from values drawn from this seed
// (with a model built with --x-initial unique); seed < 0: they start at zero.
Harness *tpu_create(int ub_words, int acc_words, int imem_words, int csr_words, int seed) {
    Harness *h = new Harness;
    h->context.reset(new VerilatedContext);
    if (seed >= 0) {
        h->context->randReset(2);
        h->context->randSeed(seed);
    }
    h->top.reset(new Vtinytpu(h->context.get()));
    h->item_words[0] = ub_words;
    h->item_words[1] = acc_words;
    h->item_words[2] = imem_words;
    h->item_words[3] = csr_words;
    h->top->CMD_VALID = 0;
    h->top->RESP_READY = 1;
    h->top->rst = 1;
    tick(h);
    tick(h);
    h->top->rst = 0;
    h->cycles = 0;
    return h;
}

void tpu_destroy(Harness *h) {
    h->top->final();
#if VM_TRACE
    if (h->trace) h->trace->close();
#endif
    delete h;
}

// Start a VCD trace (a model built with --trace; returns 0 otherwise).
int tpu_trace_open(Harness *h, const char *path) {
#if VM_TRACE
    h->context->traceEverOn(true);
    h->trace.reset(new VerilatedVcdC);
    h->top->trace(h->trace.get(), 99);
    h->trace->open(path);
    return 1;
#else
    (void)h; (void)path;
    return 0;
#endif
}

uint64_t tpu_cycles(Harness *h) { return h->cycles; }

void tpu_idle(Harness *h, uint64_t cycles) {
    h->top->CMD_VALID = 0;
    h->top->RESP_READY = 1;
    for (uint64_t i = 0; i < cycles; i++) tick(h);
}

// Send n command words, return the number of response words written to out (-1: timeout,
// -2: out too small).
int64_t tpu_exchange(Harness *h, const uint32_t *in, int64_t n, uint32_t *out,
                     int64_t max_out, uint64_t timeout) {
    int64_t sent = 0, got = 0, expected = -1;
    uint64_t start = h->cycles;
    uint32_t command = n ? in[0] : 0;
    while (true) {
        h->top->CMD_VALID = sent < n;
        h->top->CMD_PAYLOAD = sent < n ? in[sent] : 0;
        h->top->RESP_READY = 1;
        half(h, 0);
        bool cmd_fire = h->top->CMD_VALID && h->top->CMD_READY;
        bool resp_fire = h->top->RESP_VALID;
        uint32_t word = h->top->RESP_PAYLOAD;
        half(h, 1);
        h->cycles++;
        if (cmd_fire) sent++;
        if (resp_fire) {
            if (got >= max_out) return -2;
            out[got++] = word;
            if (got == 1) {
                expected = 1;
                uint32_t status = (word >> 8) & 0xff, count = word >> 16;
                uint32_t space = (command >> 8) & 0xff;
                if ((word & 0xff) == 0x02 && status == 0 && space < 4)
                    expected += (int64_t)count * h->item_words[space];
            }
        }
        if (expected >= 0 && got >= expected && sent >= n) {
            h->top->CMD_VALID = 0;
            return got;
        }
        if (h->cycles - start > timeout) return -1;
    }
}

}
