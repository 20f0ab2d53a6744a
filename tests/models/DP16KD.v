// Behavioural model of the part of the ECP5 DP16KD block RAM that
// tinytpu_hdl.gateware.block_ram uses (Lattice TN1264, "ECP5 and ECP5-5G Memory Usage
// Guide"): port A writes, port B reads, both ports the same data width; the 36-bit
// pseudo-dual-port form (write data {DIB, DIA}, ADA0..3 byte enables, read data
// {DOB, DOA}) and the 18/9/4/2/1-bit forms (write data DIA, ADA0..1 byte enables at 18
// bits, read data DOB). A read loads the output latch at the clock edge while CEB is
// high; with REGMODE_B = "OUTREG" the output register loads the latch at every edge
// while OCEB is high and drives DOB (and DOA in the 36-bit form, which then needs
// REGMODE_A = REGMODE_B; port A's output register is clocked by CLKA and enabled by
// OCEA, both checked to be those of port B). The row's place in the 14-bit address is above
// log2(16384 / rows) bits. Any other use stops the simulation.
module DP16KD(
    input DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6,
    input DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
    input ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1,
    input ADA0,
    input CEA, OCEA, CLKA, WEA, RSTA, CSA2, CSA1, CSA0,
    output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6,
    output DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,
    input DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6,
    input DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
    input ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1,
    input ADB0,
    input CEB, OCEB, CLKB, WEB, RSTB, CSB2, CSB1, CSB0,
    output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6,
    output DOB5, DOB4, DOB3, DOB2, DOB1, DOB0
);
    parameter DATA_WIDTH_A = 18;
    parameter DATA_WIDTH_B = 18;
    parameter REGMODE_A = "NOREG";
    parameter REGMODE_B = "NOREG";
    parameter RESETMODE = "SYNC";
    parameter ASYNC_RESET_RELEASE = "SYNC";
    parameter CSDECODE_A = "0b000";
    parameter CSDECODE_B = "0b000";
    parameter WRITEMODE_A = "NORMAL";
    parameter WRITEMODE_B = "NORMAL";
    parameter GSR = "AUTO";

    localparam W = DATA_WIDTH_A;
    localparam SHIFT = W == 36 ? 5 : W == 18 ? 4 : W == 9 ? 3 : W == 4 ? 2 : W == 2 ? 1 : 0;
    localparam ROWS = 16384 >> SHIFT;

    wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8,
                       DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
    wire [17:0] dib = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8,
                       DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
    wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3,
                       ADA2, ADA1, ADA0};
    wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3,
                       ADB2, ADB1, ADB0};
    wire [35:0] din = W == 36 ? {dib, dia} : {18'd0, dia};
    // Byte (9-bit) enables: ADA0..3 at 36 bits, ADA0..1 at 18, none narrower.
    wire [3:0] be = W == 36 ? ada[3:0] : W == 18 ? {2'b00, ada[1:0]} : 4'b0001;
    wire [13:0] wrow = ada >> SHIFT;
    wire [13:0] rrow = adb >> SHIFT;

    reg [35:0] mem [0:ROWS - 1];
    reg [35:0] latch = 36'd0;
    reg [35:0] outreg = 36'd0;
    integer i;
    initial begin
        for (i = 0; i < ROWS; i = i + 1) mem[i] = 36'd0;
        if (DATA_WIDTH_A != DATA_WIDTH_B || (W != 36 && W != 18 && W != 9 && W != 4 &&
                W != 2 && W != 1) || (W != 36 && REGMODE_A != "NOREG") ||
                (W == 36 && REGMODE_A != REGMODE_B) ||
                (REGMODE_B != "NOREG" && REGMODE_B != "OUTREG") ||
                WRITEMODE_A != "NORMAL" || CSDECODE_A != "0b000" || CSDECODE_B != "0b000") begin
            $display("DP16KD model: configuration not modelled");
            $stop;
        end
    end

    always @(posedge CLKA) begin
        if (RSTA || CSA0 || CSA1 || CSA2) begin
            $display("DP16KD model: port A reset or chip select not modelled");
            $stop;
        end
        // (The 36-bit form writes while CEA is high, WEA tied high.)
        if (CEA && WEA) begin
            if (W >= 18) begin
                if (be[0]) mem[wrow][8:0] <= din[8:0];
                if (be[1]) mem[wrow][17:9] <= din[17:9];
                if (W == 36 && be[2]) mem[wrow][26:18] <= din[26:18];
                if (W == 36 && be[3]) mem[wrow][35:27] <= din[35:27];
            end else begin
                mem[wrow] <= din & ((36'd1 << W) - 36'd1);
            end
        end
    end

    always @(posedge CLKB) begin
        if (WEB || RSTB || CSB0 || CSB1 || CSB2) begin
            $display("DP16KD model: port B write, reset or chip select not modelled");
            $stop;
        end
        if (W == 36 && REGMODE_A == "OUTREG" && (CLKA !== CLKB || OCEA !== OCEB)) begin
            $display("DP16KD model: the output registers' clocks or enables differ");
            $stop;
        end
        if (CEB) latch <= mem[rrow];
        if (OCEB) outreg <= latch;
    end

    wire [35:0] dout = REGMODE_B == "OUTREG" ? outreg : latch;
    // 36 bits: {DOB, DOA}; narrower: DOB (DOA undriven by a read-only port A: zero here).
    wire [17:0] doa = W == 36 ? dout[17:0] : 18'd0;
    wire [17:0] dob = W == 36 ? dout[35:18] : dout[17:0];
    assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6,
            DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = doa;
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6,
            DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = dob;
endmodule
