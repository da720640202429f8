// Expiry from TypeScript: a TtlTable and a ScheduledSweeper that sweeps it, wired through the table's
// `target` output (one object: name, ARN, key and TTL attributes, expiry index) instead of its fields.
import * as expiry from "@pulumi/expiry";

const sessions = new expiry.TtlTable("sessions", {
    hashKey: "sessionId",
    ttlAttribute: "expires_at",
    expiryIndex: true,
    expiryIndexShards: 10,
});

const sweeper = new expiry.ScheduledSweeper("sweeper", {
    kind: "sweep",
    schedule: "rate(1 hour)",
    table: sessions.target,
    breaker: {
        maxShare: 0.5,
        ignoreBelow: 10,
    },
    timeoutSeconds: 300,
});

export const tableName = sessions.tableName;
export const sweeperFunction = sweeper.functionName;
