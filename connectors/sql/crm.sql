-- CRM source schema, shaped like the Salesforce objects pssync reads (Account, Opportunity).
-- Custom fields keep Salesforce's __c suffix so mappings read like the real org.
CREATE SCHEMA IF NOT EXISTS sales;

CREATE TABLE IF NOT EXISTS sales.account (
    id                   varchar(18) PRIMARY KEY,
    name                 text        NOT NULL,
    type                 text,
    industry             text,
    billing_country      char(2),
    currency_iso_code    char(3)     NOT NULL DEFAULT 'USD',
    tax_id__c            text,
    erp_customer_id__c   text,
    created_date         timestamptz NOT NULL DEFAULT now(),
    last_modified_date   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sales.opportunity (
    id                       varchar(18) PRIMARY KEY,
    account_id               varchar(18) REFERENCES sales.account (id),
    name                     text        NOT NULL,
    stage_name               text        NOT NULL,
    amount                   numeric(18, 2),
    currency_iso_code        char(3)     NOT NULL DEFAULT 'USD',
    close_date               date,
    probability              numeric(5, 2),
    is_closed                boolean     NOT NULL DEFAULT false,
    is_won                   boolean     NOT NULL DEFAULT false,
    billing_type__c          text,
    delivery_region__c       text,
    project_manager_email__c text,
    sow_reference__c         text,
    service_lines__c         text,
    created_date             timestamptz NOT NULL DEFAULT now(),
    last_modified_date       timestamptz NOT NULL DEFAULT now()
);

-- Quote-to-cash shape. Additive only, so an existing CRM database upgrades in place.
-- Account hierarchy (Salesforce Account.ParentId).
ALTER TABLE sales.account ADD COLUMN IF NOT EXISTS parent_id varchar(18) REFERENCES sales.account (id);
-- Opportunity.Type: New Business, Change Order, ...
ALTER TABLE sales.opportunity ADD COLUMN IF NOT EXISTS type text;
-- A change order's won deal it amends (type Change Order); null for other deals.
ALTER TABLE sales.opportunity ADD COLUMN IF NOT EXISTS parent_opportunity_id varchar(18);

-- OpportunityLineItem: one sold service line of a deal.
CREATE TABLE IF NOT EXISTS sales.opportunity_line_item (
    id                   varchar(18) PRIMARY KEY,
    opportunity_id       varchar(18) NOT NULL REFERENCES sales.opportunity (id) ON DELETE CASCADE,
    service_line__c      text        NOT NULL,
    description          text,
    quantity             numeric(12, 2) NOT NULL DEFAULT 1,
    unit_price           numeric(18, 2) NOT NULL,
    currency_iso_code    char(3)     NOT NULL DEFAULT 'USD',
    created_date         timestamptz NOT NULL DEFAULT now(),
    last_modified_date   timestamptz NOT NULL DEFAULT now()
);

-- Billing milestones agreed in the deal (a custom object in Salesforce terms).
CREATE TABLE IF NOT EXISTS sales.billing_milestone (
    id                   varchar(18) PRIMARY KEY,
    opportunity_id       varchar(18) NOT NULL REFERENCES sales.opportunity (id) ON DELETE CASCADE,
    name                 text        NOT NULL,
    due_date__c          date,
    amount__c            numeric(18, 2),
    percent__c           numeric(5, 2),
    currency_iso_code    char(3)     NOT NULL DEFAULT 'USD',
    created_date         timestamptz NOT NULL DEFAULT now(),
    last_modified_date   timestamptz NOT NULL DEFAULT now()
);

-- A child's delete must say which opportunity it belonged to (its canonical event goes to
-- the opportunity's partition): full old rows in delete events.
ALTER TABLE sales.opportunity_line_item REPLICA IDENTITY FULL;
ALTER TABLE sales.billing_milestone REPLICA IDENTITY FULL;

-- Fields pssync writes back (stand-ins for the org's custom fields). Their change data comes
-- back through CDC and is recognized as pssync's own echo.
ALTER TABLE sales.opportunity ADD COLUMN IF NOT EXISTS project_code__c text;
ALTER TABLE sales.opportunity ADD COLUMN IF NOT EXISTS psa_project_url__c text;
ALTER TABLE sales.opportunity ADD COLUMN IF NOT EXISTS sync_status__c text;
ALTER TABLE sales.opportunity ADD COLUMN IF NOT EXISTS sync_error__c text;
ALTER TABLE sales.opportunity ADD COLUMN IF NOT EXISTS last_synced_at__c timestamptz;

-- The write-back's own role (PSSYNC_CRM_WRITEBACK_URL): it finds rows by id, reads and
-- updates exactly the fields pssync owns (reads: to skip writes that change nothing), and
-- nothing else. Roles are per server: created once, granted
-- in every CRM database this file is applied to.
DO $$
BEGIN
    CREATE ROLE pssync_crm_writeback LOGIN;
EXCEPTION
    -- Already there, or created at the same moment by another database's setup.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;
GRANT USAGE ON SCHEMA sales TO pssync_crm_writeback;
GRANT SELECT (id, erp_customer_id__c), UPDATE (erp_customer_id__c)
    ON sales.account TO pssync_crm_writeback;
GRANT SELECT (id, project_code__c, psa_project_url__c, sync_status__c, sync_error__c,
              last_synced_at__c),
      UPDATE (project_code__c, psa_project_url__c, sync_status__c, sync_error__c,
              last_synced_at__c)
    ON sales.opportunity TO pssync_crm_writeback;
